// bench/services.py's workloads written with Restate's TypeScript SDK (@restatedev/restate-sdk, installed by
// scripts/ts-sdk), for `bench/compare --remote ts`: served over h2c to `unbroken serve` (no APP), which
// registers it as a remote deployment. Same handlers, same inputs and outputs as bench/services.py.
//
//   NODE_PATH=$(scripts/ts-sdk) node bench/ts_services.cjs PORT
"use strict";

require("../tests/e2e/ts_services/node20.cjs"); // before the SDK: it needs Promise.withResolvers

const restate = require("@restatedev/restate-sdk");

const inc = (i) => i + 1;

const bench = restate.service({
  name: "Bench",
  handlers: {
    noop: async (ctx, req) => req, // W1 (W6 sends it one-way)
    steps: async (ctx, i) => {
      // W2: three durable steps
      i = await ctx.run("step1", () => inc(i));
      i = await ctx.run("step2", () => inc(i));
      i = await ctx.run("step3", () => inc(i));
      return i;
    },
    sleep: async (ctx) => {
      await ctx.sleep(100); // W4
    },
    fanout: async (ctx) => {
      // W5: ten concurrent calls to noop, then gather
      const calls = [];
      for (let n = 0; n < 10; n++) {
        calls.push(ctx.serviceClient({ name: "Bench" }).noop({ i: n }));
      }
      const results = await restate.RestatePromise.all(calls);
      return results.length;
    },
  },
});

const counter = restate.object({
  name: "Counter",
  handlers: {
    add: async (ctx, delta) => {
      // W3a/W3b: read-modify-write under the key's exclusive lock
      const count = ((await ctx.get("count")) ?? 0) + delta;
      ctx.set("count", count);
      return count;
    },
  },
});

restate
  .endpoint()
  .bind(bench)
  .bind(counter)
  .listen(Number(process.argv[2]))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
