// f16 tests run on Mesa 25's lavapipe (shader-f16, subgroups of 8, bit-exact f16 arithmetic); SwiftShader,
// where the f32 tests run, has no shader-f16. Importing this module first points this test file's process
// at lavapipe (vitest runs each file in its own process): Dawn reads VK_ICD_FILENAMES when kiln's device
// opens. Where lavapipe is not installed the f16 tests skip, saying why; in CI (.ci/run sets
// KILN_REQUIRE_LAVAPIPE) a missing lavapipe is a failure instead.

import { existsSync } from 'node:fs';

export const LAVAPIPE_ICD = '/usr/share/vulkan/icd.d/lvp_icd.json';

/** Whether lavapipe is there to run this file's f16 tests. */
export const HAS_LAVAPIPE = existsSync(LAVAPIPE_ICD);

if (HAS_LAVAPIPE) process.env.VK_ICD_FILENAMES = LAVAPIPE_ICD;
else if (process.env.KILN_REQUIRE_LAVAPIPE) throw new Error(`KILN_REQUIRE_LAVAPIPE is set but ${LAVAPIPE_ICD} is missing: install mesa-vulkan-drivers from bookworm-backports (see README, Set up and test)`);
else console.warn(`f16 GPU tests skipped: no lavapipe at ${LAVAPIPE_ICD} (see README, Set up and test)`);
