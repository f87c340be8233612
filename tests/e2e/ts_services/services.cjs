// Services written with Restate's TypeScript SDK (@restatedev/restate-sdk 1.17.2, plain CommonJS, no build),
// registered with `unbroken serve` by tests/e2e/test_ts_sdk.py. Unbroken never imports or runs this itself.
//
//   node services.cjs H2_PORT HTTP1_PORT
//
// serves the same endpoint twice: bidirectional streams over HTTP/2 (h2c, the SDK's listen()) and
// request/response over HTTP/1.1 (the SDK's http1Handler). $LEDGER names a file each side effect appends a
// JSON line to (the tests count them from outside); $PEER_NAME tells two copies apart.
"use strict";

require("./node20.cjs"); // before the SDK: it needs Promise.withResolvers

const fs = require("node:fs");
const http = require("node:http");
const http2 = require("node:http2");
const restate = require("@restatedev/restate-sdk");

function ledger(step) {
  if (process.env.LEDGER) fs.appendFileSync(process.env.LEDGER, JSON.stringify({ step }) + "\n");
  return step;
}

// Over HTTP/2 a handler waiting this long is told to suspend, as over HTTP/1.1 every wait suspends at once:
// the tests can wait for "suspended" in both modes.
const options = { inactivityTimeout: 500 };
const json = (v) => new TextEncoder().encode(JSON.stringify(v));
const unjson = (b) => JSON.parse(new TextDecoder().decode(b));

const greeter = restate.service({
  name: "TsGreeter",
  options,
  handlers: {
    greet: async (ctx, name) => {
      ledger(`greet.attempt.${name}`); // outside ctx.run: once per attempt
      const greeting = await ctx.run("pick greeting", () => "Hello");
      await ctx.sleep(50);
      return `${greeting} ${name}!`;
    },
    nap: async (ctx, ms) => {
      await ctx.run("before", () => ledger(`nap.before.${ms}`));
      await ctx.sleep(ms);
      await ctx.run("after", () => ledger(`nap.after.${ms}`));
      return `slept ${ms} on ${process.env.PEER_NAME || "a"}`;
    },
    fail: async (ctx, message) => {
      throw new restate.TerminalError(message, { errorCode: 418 });
    },
    // JS -> Unbroken in-process: a call (LocalDoubler/double) and a one-way send (LocalTally/{key}/add)
    callLocal: async (ctx, req) => {
      const doubled = await ctx.genericCall({
        service: "LocalDoubler",
        method: "double",
        parameter: json(req.n),
        outputSerde: restate.serde.binary,
      });
      ctx.genericSend({ service: "LocalTally", method: "add", key: req.key, parameter: json(req.n) });
      return unjson(doubled);
    },
    // a step failing every time: retried by the engine, then the SDK's last proposal is a terminal failure
    runGivesUp: async (ctx, name) => {
      try {
        await ctx.run(
          "always fails",
          () => {
            ledger(`giveup.${name}`);
            throw new Error("boom");
          },
          { maxRetryAttempts: 3, initialRetryInterval: 10 },
        );
        return "ran";
      } catch (e) {
        if (!(e instanceof restate.TerminalError)) throw e;
        return "gave up";
      }
    },
    // a sleep, a call and a step awaited together (RestatePromise.all), then a race a short timer wins
    together: async (ctx, n) => {
      const [, echoed, stepped] = await restate.RestatePromise.all([
        ctx.sleep(30),
        ctx.serviceClient({ name: "TsGreeter" }).echo(n),
        ctx.run("step", () => n + 1),
      ]);
      const never = ctx.awakeable().promise;
      const won = await restate.RestatePromise.race([never, ctx.sleep(20).map(() => "timer")]);
      return [echoed, stepped, won];
    },
    echo: async (ctx, v) => v,
    // a named signal to another invocation (TsCounter/waitSignal)
    signalOther: async (ctx, target) => {
      ctx.invocation(target).signal("go").resolve("signalled");
      return "sent";
    },
    // a one-way call to TsCounter/{key}/add, then attaches to it by its invocation id
    fireAndAttach: async (ctx, key) => {
      const handle = ctx.objectSendClient({ name: "TsCounter" }, key).add(1);
      const id = await handle.invocationId;
      return await ctx.invocation(id).attach();
    },
  },
});

const counter = restate.object({
  name: "TsCounter",
  options,
  handlers: {
    add: async (ctx, n) => {
      const next = ((await ctx.get("count")) ?? 0) + n;
      ctx.set("count", next);
      return next;
    },
    get: restate.handlers.object.shared(async (ctx) => (await ctx.get("count")) ?? 0),
    reset: async (ctx) => {
      ctx.clearAll();
    },
    // awaits an awakeable whose id it publishes in its state; cancelled, it compensates then fails
    waitAwakeable: async (ctx) => {
      const { id, promise } = ctx.awakeable();
      ctx.set("awakeable", id);
      try {
        return await promise;
      } catch (e) {
        if (e instanceof restate.TerminalError) ctx.set("compensated", e.code);
        throw e;
      }
    },
    waitSignal: async (ctx) => await ctx.signal("go"),
    // 4 MiB and more: past HTTP/2's initial flow-control window, both ways
    putBlob: async (ctx, size) => {
      ctx.set("blob", "x".repeat(size));
      return size;
    },
    blobSize: restate.handlers.object.shared(async (ctx) => ((await ctx.get("blob")) ?? "").length),
    // JS -> Unbroken -> back: adds LocalDoubler/double(n) to the count
    addViaLocal: async (ctx, n) => {
      const doubled = await ctx.genericCall({
        service: "LocalDoubler",
        method: "double",
        parameter: json(n),
        outputSerde: restate.serde.binary,
      });
      const next = ((await ctx.get("count")) ?? 0) + unjson(doubled);
      ctx.set("count", next);
      return next;
    },
  },
});

// state read lazily: GetLazyState commands answered by the engine, not the StartMessage's eager state
const lazy = restate.object({
  name: "TsLazy",
  options: { ...options, enableLazyState: true },
  handlers: {
    put: async (ctx, v) => {
      const seen = (await ctx.get("v")) ?? null;
      ctx.set("v", v);
      return [seen, (await ctx.stateKeys()).length];
    },
  },
});

const signup = restate.workflow({
  name: "TsSignup",
  options,
  handlers: {
    run: async (ctx, email) => {
      ctx.set("email", email);
      const code = await ctx.promise("code");
      return `${email} confirmed with ${code}`;
    },
    confirm: async (ctx, code) => {
      await ctx.promise("code").resolve(code);
      return "ok";
    },
    peek: async (ctx) => (await ctx.promise("code").peek()) ?? null,
  },
});

async function main() {
  const [h2Port, h1Port] = process.argv.slice(2).map(Number);
  const endpoint = restate.endpoint().bind(greeter).bind(counter).bind(lazy).bind(signup);
  const h2 = http2.createServer(endpoint.http2Handler());
  const h1 = http.createServer(endpoint.http1Handler());
  await Promise.all([
    new Promise((ok) => h2.listen(h2Port, "127.0.0.1", ok)),
    new Promise((ok) => h1.listen(h1Port, "127.0.0.1", ok)),
  ]);
  console.log(`serving h2c on ${h2Port}, HTTP/1.1 on ${h1Port}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
