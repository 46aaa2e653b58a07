// Every operation of the live server's OpenAPI document has a method here and
// a declaration in index.d.ts; the SDK's version is the API's.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as brig from "../src/index.js";

const declarations = readFileSync(new URL("../src/index.d.ts", import.meta.url), "utf8");

/** The body of `export class Name ... { ... }` in index.d.ts. */
function declared(name) {
  const start = declarations.search(new RegExp(`export (declare )?class ${name}\\b`));
  assert.ok(start >= 0, `index.d.ts declares no class ${name}`);
  const end = declarations.indexOf("\n}", start);
  return declarations.slice(start, end);
}

test("every OpenAPI operation has a method, and index.d.ts declares it", async () => {
  const client = new brig.Client({ url: process.env.BRIG_URL, apiKey: process.env.BRIG_API_KEY });
  const document = await client.openapi();
  const operations = Object.values(document.paths).flatMap((path) => Object.values(path).map((op) => op.operationId));
  assert.ok(operations.length > 30);
  for (const operation of operations) {
    const entry = brig.OPERATIONS[operation];
    assert.ok(entry, `no SDK method for ${operation}`);
    const [cls, method] = entry;
    assert.equal(typeof cls.prototype[method], "function", `${cls.name}.${method} (${operation})`);
    assert.match(declared(cls.name), new RegExp(`\\n\\s+${method}[(<]`), `index.d.ts: ${cls.name}.${method}`);
  }
  assert.deepEqual(Object.keys(brig.OPERATIONS).filter((op) => !operations.includes(op)), [], "methods naming operations the API lacks");
  assert.equal(brig.VERSION, document.info.version);
});

test("index.d.ts declares every export and every public method", () => {
  for (const [name, value] of Object.entries(brig)) {
    assert.match(declarations, new RegExp(`export (declare )?(class|function|const) ${name}\\b`), `index.d.ts lacks ${name}`);
    if (typeof value === "function" && /^[A-Z]/.test(name) && value.prototype) {
      const body = declared(name);
      for (const method of Object.getOwnPropertyNames(value.prototype)) {
        if (method === "constructor" || method.startsWith("_")) continue;
        assert.match(body, new RegExp(`\\n\\s+${method}[(<]`), `index.d.ts: ${name}.${method}`);
      }
    }
  }
});
