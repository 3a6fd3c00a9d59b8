'use strict';
// The warm pool's Node loader, preloaded with `-r /box/.umcp-loader.js` by a sandbox started as
// `node --max-old-space-size=N -r /box/.umcp-loader.js /box/main.js`. It blocks on descriptor 3
// until the service has written the request's /box/main.js (a host directory bound at /box) and
// sends "UMCP-RLIMITS …\n" then "arg\0arg\0…"; it then puts the arguments into process.argv,
// removes every trace of itself that programs read (execArgv, which child_process.fork()
// passes on, and the module cache) and returns, so Node runs /box/main.js as its main module
// exactly as a cold `node --max-old-space-size=N /box/main.js arg…` would: same argv,
// require.main, __filename, stack traces and exit codes. Node cannot call setrlimit: the
// sandbox was started with the request's rlimits, and only requests with those rlimits come
// here (the line is checked and skipped).
const fs = require('fs');

fs.writeSync(1, 'R');
const chunks = [];
const buf = Buffer.allocUnsafe(1 << 16);
for (;;) {
  const n = fs.readSync(3, buf, 0, buf.length, null);
  if (n === 0) break;
  chunks.push(Buffer.from(buf.subarray(0, n)));
}
fs.closeSync(3);
const data = Buffer.concat(chunks);
const newline = data.indexOf(10);
if (newline < 0 || !data.subarray(0, newline).toString('latin1').startsWith('UMCP-RLIMITS')) {
  process.reallyExit(127);
}
const args = data.subarray(newline + 1).toString('utf8').split('\0');
// Every argument ends with NUL: the last piece is empty.
args.pop();
process.argv.splice(2, process.argv.length - 2, ...args);
const preload = process.execArgv.indexOf('-r');
if (preload >= 0) process.execArgv.splice(preload, 2);
delete require.cache[__filename];
