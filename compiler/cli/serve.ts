// kiln serve: a folder as a static web page, its main.ts bundled for the browser by esbuild on each
// request (so an edit shows on reload), with source maps. WebGPU needs a secure context: the server
// listens on 127.0.0.1, which browsers treat as one.

import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { type BuildContext, type Metafile, context } from 'esbuild';
import type { Command } from './main.ts';
import { stringFlag, usageError } from './args.ts';

/** Node-only code kiln loads lazily (Dawn, files, ts-morph): left as dynamic imports the browser never runs. */
const NODE_ONLY = ['webgpu', 'ts-morph', 'node:*'];

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.safetensors': 'application/octet-stream',
};

export interface BrowserBundle {
  readonly js: string;
  readonly map: string;
  readonly metafile: Metafile;
}

/**
 * A page inside kiln's own checkout (examples/browser) imports `kiln` from the .ts sources, as its other
 * imports do (package.json's `kiln-source` condition), not from the built dist/: one copy of kiln.
 */
function insideKilnSources(folder: string): boolean {
  for (let dir = folder; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) return JSON.parse(readFileSync(pkg, 'utf-8')).name === 'kiln' && existsSync(join(dir, 'index.ts'));
    if (dirname(dir) === dir) return false;
  }
}

/** An esbuild context for FOLDER/main.ts -> main.js (+ main.js.map), browser platform, ESM. */
export function bundler(folder: string): Promise<BuildContext<{ write: false; metafile: true }>> {
  return context({
    entryPoints: [join(folder, 'main.ts')],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    sourcemap: 'linked',
    outdir: folder,
    write: false,
    metafile: true,
    logLevel: 'silent',
    external: NODE_ONLY,
    conditions: insideKilnSources(folder) ? ['kiln-source', 'module'] : undefined,
  });
}

export async function bundle(ctx: BuildContext<{ write: false; metafile: true }>): Promise<BrowserBundle> {
  const result = await ctx.rebuild();
  const text = (suffix: string) => result.outputFiles.find((f) => f.path.endsWith(suffix))?.text ?? '';
  return { js: text('main.js'), map: text('main.js.map'), metafile: result.metafile };
}

/**
 * What in a browser bundle would need Node: an input from a Node-only package, or a static import of
 * one (a dynamic import stays unevaluated behind kiln's `isNode()` and `process` guards). Empty when clean.
 */
export function nodeOnlyImports(metafile: Metafile): string[] {
  const problems: string[] = [];
  for (const input of Object.keys(metafile.inputs)) {
    if (/node_modules\/(webgpu|ts-morph|@ts-morph|typescript)\//.test(input)) problems.push(`bundles ${input}`);
  }
  for (const output of Object.values(metafile.outputs)) {
    for (const imp of output.imports) {
      if (imp.external && imp.kind !== 'dynamic-import') problems.push(`imports ${imp.path} (${imp.kind})`);
    }
  }
  return problems;
}

export interface RunningServer {
  readonly url: string;
  /** The bundle the page gets now (what /main.js serves). */
  bundle(): Promise<BrowserBundle>;
  close(): Promise<void>;
}

/** Serves FOLDER on 127.0.0.1:PORT (0 picks a free port); /main.js is FOLDER/main.ts, bundled per request. */
export async function startServer(folderPath: string, port = 0): Promise<RunningServer> {
  const folder = resolve(folderPath);
  const ctx = await bundler(folder);
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (path === '/main.js' || path === '/main.js.map') {
      bundle(ctx).then(
        (b) => send(200, CONTENT_TYPES[extname(path)], path === '/main.js' ? b.js : b.map),
        (e: { errors?: { text: string; location?: { file: string; line: number } }[]; message?: string }) => {
          const first = e.errors?.[0];
          const where = first?.location ? `${first.location.file}:${first.location.line}: ` : '';
          const message = `kiln serve: could not bundle main.ts: ${where}${first?.text ?? e.message}`;
          console.error(message);
          // The page shows it: a script that throws names the problem in the console and the error box.
          send(200, CONTENT_TYPES['.js'], `throw new Error(${JSON.stringify(message)});`);
        },
      );
      return;
    }
    const file = resolve(folder, '.' + (path.endsWith('/') ? path + 'index.html' : path));
    if (file !== folder && !file.startsWith(folder + sep)) return send(403, 'text/plain', 'forbidden');
    stat(file).then(
      (s) => {
        if (!s.isFile()) return send(404, 'text/plain', `not found: ${path}`);
        res.writeHead(200, { 'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream', 'content-length': s.size, 'cache-control': 'no-store' });
        createReadStream(file).pipe(res);
      },
      () => send(404, 'text/plain', `not found: ${path}`),
    );
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      void ctx.dispose();
      fail(e.code === 'EADDRINUSE' ? usageError('serve', `port ${port} is in use; pass --port with another port (0: any free one)`) : e);
    });
    server.listen(port, '127.0.0.1', ok);
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  return {
    url: `http://127.0.0.1:${bound}/`,
    bundle: () => bundle(ctx),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((ok) => server.close(() => ok()));
      await ctx.dispose();
    },
  };
}

export const serveCommand: Command = {
  spec: {
    name: 'serve',
    summary: 'serve a folder as a web page, its main.ts bundled for the browser (kiln on the browser\'s WebGPU)',
    usage: 'kiln serve FOLDER [--port N]',
    example: 'kiln serve examples/browser --port 8080',
    positionals: ['FOLDER'],
    flags: [{ name: 'port', kind: 'string', default: '8080', help: 'port on 127.0.0.1 to listen on (0: any free port)' }],
  },

  async run(args) {
    const port = Number(stringFlag(args, 'port'));
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw usageError('serve', `--port must be a port number, got ${stringFlag(args, 'port')}`);
    const folder = args.positionals[0];
    const s = await stat(join(folder, 'main.ts')).catch(() => null);
    if (!s?.isFile()) throw usageError('serve', `${folder} must be a folder with a main.ts (and an index.html that loads main.js)`);
    const server = await startServer(folder, port);
    // Bundle once now, so a broken main.ts or a Node-only import shows here, not only in the browser.
    const first = await server.bundle().catch(async (e: unknown) => {
      await server.close();
      throw e;
    });
    for (const problem of nodeOnlyImports(first.metafile)) console.warn(`kiln serve: warning: the browser bundle ${problem}`);
    console.log(`kiln serve: ${folder} at ${server.url}  (Ctrl-C stops)`);
    await new Promise<void>((ok) => {
      process.once('SIGINT', () => void server.close().then(ok));
      process.once('SIGTERM', () => void server.close().then(ok));
    });
  },
};
