"use strict";
// The SDK calls Promise.withResolvers (node >= 22); node 20 lacks it: the same few lines, defined here.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    return { promise, resolve, reject };
  };
}
