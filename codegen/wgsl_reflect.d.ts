// Types for wgsl_reflect's ES module build (imported by path in reflect.ts; the package types its main only).
declare module 'wgsl_reflect/wgsl_reflect.module.js' {
  export * from 'wgsl_reflect';
}
