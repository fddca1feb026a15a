#!/usr/bin/env node
// Compiles contracts/src/**/*.sol with solc-js (npm `solc`, pinned) against OpenZeppelin from npm and
// writes one artifact per contract to contracts/artifacts/<Name>.json ({abi, bytecode, deployedBytecode},
// the layout alloy's `sol!(Name, "Name.json")` reads) plus sizes.txt.
//
//   node contracts/compile.mjs           write the artifacts
//   node contracts/compile.mjs --check   compile in memory; exit 1 listing artifacts that differ (CI drift)
//
// Output is deterministic: same sources, same compiler, same bytes.
import { createRequire } from "node:module";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const ROOT = dirname(fileURLToPath(import.meta.url));
const SRC = join(ROOT, "src");
const OUT = join(ROOT, "artifacts");
const NODE_MODULES = join(ROOT, "..", "node_modules");
const SOLC_VERSION = "0.8.37";
// Library contracts deployed as they are, so they get artifacts too.
const EXPORTED_DEPENDENCIES = {
  "@openzeppelin/contracts/governance/TimelockController.sol": ["TimelockController"],
};
const MAX_RUNTIME_BYTES = 24_576; // EIP-170
const MAX_INITCODE_BYTES = 49_152; // EIP-3860

const check = process.argv.includes("--check");

function fail(message) {
  console.error(`compile: ${message}`);
  process.exit(1);
}

function solidityFiles(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .flatMap((entry) => {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) return solidityFiles(path);
      return entry.name.endsWith(".sol") ? [path] : [];
    });
}

// Sorted object keys at every level (arrays keep their order), so the JSON does not depend on the
// order in which the compiler happens to emit keys.
function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sortKeys(value[key])]),
  );
}

if (!solc.version().startsWith(`${SOLC_VERSION}+`)) {
  fail(`solc ${SOLC_VERSION} expected, found ${solc.version()} (run npm ci)`);
}

const sources = {};
for (const path of solidityFiles(SRC)) {
  const name = relative(ROOT, path).split(sep).join("/");
  sources[name] = { content: readFileSync(path, "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

function findImports(path) {
  if (!path.startsWith("@openzeppelin/")) return { error: `import not found: ${path}` };
  const file = join(NODE_MODULES, ...path.split("/"));
  if (!existsSync(file)) return { error: `${path} not in node_modules (run npm ci)` };
  return { contents: readFileSync(file, "utf8") };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

let errorCount = 0;
for (const diagnostic of output.errors ?? []) {
  console.error(diagnostic.formattedMessage.trimEnd());
  if (diagnostic.severity === "error") errorCount += 1;
}
if (errorCount > 0) fail(`${errorCount} error(s)`);

const artifacts = new Map();
for (const file of Object.keys(output.contracts).sort()) {
  const exported = file.startsWith("src/") ? null : EXPORTED_DEPENDENCIES[file];
  if (!file.startsWith("src/") && !exported) continue;
  for (const [name, contract] of Object.entries(output.contracts[file])) {
    if (exported && !exported.includes(name)) continue;
    const bytecode = contract.evm.bytecode.object;
    if (bytecode === "") continue; // interfaces and abstract contracts
    if (artifacts.has(name)) fail(`two contracts named ${name}`);
    artifacts.set(name, {
      abi: sortKeys(contract.abi),
      bytecode: { object: `0x${bytecode}` },
      deployedBytecode: { object: `0x${contract.evm.deployedBytecode.object}` },
    });
  }
}

const names = [...artifacts.keys()].sort();
const width = Math.max(...names.map((name) => name.length));
const sizeLines = [`${"contract".padEnd(width)}  runtime bytes  initcode bytes`];
const oversized = [];
for (const name of names) {
  const runtime = (artifacts.get(name).deployedBytecode.object.length - 2) / 2;
  const initcode = (artifacts.get(name).bytecode.object.length - 2) / 2;
  sizeLines.push(`${name.padEnd(width)}  ${String(runtime).padStart(13)}  ${String(initcode).padStart(14)}`);
  if (runtime > MAX_RUNTIME_BYTES || initcode > MAX_INITCODE_BYTES) oversized.push(name);
}
sizeLines.push(`limits: runtime ${MAX_RUNTIME_BYTES} (EIP-170), initcode ${MAX_INITCODE_BYTES} (EIP-3860)`);
if (oversized.length > 0) fail(`over the size limit: ${oversized.join(", ")}\n${sizeLines.join("\n")}`);

const expected = new Map(names.map((name) => [`${name}.json`, `${JSON.stringify(artifacts.get(name), null, 2)}\n`]));
expected.set("sizes.txt", `${sizeLines.join("\n")}\n`);
const present = existsSync(OUT) ? readdirSync(OUT).filter((f) => f.endsWith(".json") || f === "sizes.txt") : [];
const stale = present.filter((file) => !expected.has(file));

if (check) {
  const drift = [...expected.keys()].filter((file) => {
    const path = join(OUT, file);
    return !existsSync(path) || readFileSync(path, "utf8") !== expected.get(file);
  });
  drift.push(...stale.map((file) => `${file} (no longer produced)`));
  if (drift.length > 0) {
    fail(`artifacts differ from the sources; run \`node contracts/compile.mjs\` and commit:\n  ${drift.join("\n  ")}`);
  }
  console.log(`compile: ${names.length} artifacts up to date`);
} else {
  mkdirSync(OUT, { recursive: true });
  for (const file of stale) rmSync(join(OUT, file));
  for (const [file, text] of expected) writeFileSync(join(OUT, file), text);
  console.log(sizeLines.join("\n"));
}
