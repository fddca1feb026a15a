// Validates a .gltf with the Khronos glTF Validator (npm `gltf-validator`, installed by `npm ci`)
// and prints the validation report as JSON. External files (textures) are loaded next to it.
//
// Usage: node pipeline/tests/validate-gltf.mjs <file.gltf>
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import validator from 'gltf-validator';

const file = process.argv[2];
const report = await validator.validateBytes(new Uint8Array(await readFile(file)), {
  uri: path.basename(file),
  maxIssues: 0,
  writeTimestamp: false,
  externalResourceFunction: async (uri) =>
    new Uint8Array(await readFile(path.resolve(path.dirname(file), decodeURIComponent(uri)))),
});
console.log(JSON.stringify(report, null, 2));
