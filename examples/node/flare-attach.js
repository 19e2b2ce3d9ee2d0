// A flare attach client for Node.js, with no dependencies: joins a flare
// group through its attach socket as a worker (docs/attach.md), registers
// handlers, acks every delivery and raises signals.
//
//   const { attach } = require("./flare-attach");
//   const w = await attach("/run/app/flare.attach");       // or "@name"
//   await w.register(17, "workers", (num, origin) => console.log("got", num));
//   await w.ready();                  // deliveries start now
//   w.raise(18);
//
// Run as a program it is the example the tests start:
//   node flare-attach.js SOCKET [--register NUM:TARGET]... [--timer NUM:SECS]...
//                               [--raise NUM]...
// It registers, says Ready, raises, then prints one line per event
// (ATTACHED, REGISTERED, SOURCE, READY, RAN, RAISED); "raise N" on stdin raises
// again; it leaves when its stdin closes.
"use strict";
const net = require("net");

const DELIVER = 1, ACK = 2, RAISE = 3, REQUEST = 4, REPLY = 5;
const MAX_PAYLOAD = 65536;

function frame(kind, num, len, id) {
  const b = Buffer.alloc(16);
  b[0] = kind;
  b[1] = num;
  b.writeUInt32LE(len, 4);
  b.writeBigUInt64LE(BigInt(id), 8);
  return b;
}

class Worker {
  constructor(sock, info) {
    this.sock = sock;
    this.worker = info.worker; // the slot: this process is `worker${worker}`
    this.masterPid = info.master_pid;
    this.handlers = new Map(); // num -> function(num, origin)
    this.pending = new Map(); // request id -> { resolve, reject }
    this.nextId = 1n;
    this.closed = new Promise((resolve) => sock.on("close", resolve));
  }

  // Sends a request (JSON, serde's external tagging); resolves with the reply.
  request(body) {
    const payload = Buffer.from(JSON.stringify(body));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.sock.write(Buffer.concat([frame(REQUEST, 0, payload.length, id), payload]));
    });
  }

  // Registers `fn` for signal `num` on `target` ("workers", "worker", ...).
  // The handler is installed first: the master may route at once (after
  // ready(); before it, nothing is delivered).
  async register(num, target, fn) {
    this.handlers.set(num, fn);
    const reply = await this.request({ Register: { num, target } });
    if (reply !== "Ok") {
      this.handlers.delete(num);
      throw new Error(`register ${num} for ${target}: ${JSON.stringify(reply)}`);
    }
  }

  // Asks the master to raise `secs`-second timer signals `num` (one source
  // however many members add the same one); resolves with the source id.
  async addTimer(num, secs) {
    const period = { secs: Math.floor(secs), nanos: Math.round((secs % 1) * 1e9) };
    const reply = await this.request({
      AddSource: { sig: num, source: { kind: { Timer: { period, repeat: null } }, unique: false } },
    });
    if (!reply || reply.Source === undefined) throw new Error(`add timer: ${JSON.stringify(reply)}`);
    return reply.Source;
  }

  // Tells the master that the handlers are in place: deliveries start
  // (signals already waiting for this slot come first).
  async ready() {
    const reply = await this.request("Ready");
    if (reply !== "Ok") throw new Error(`ready: ${JSON.stringify(reply)}`);
  }

  // Raises signal `num`: the master routes it by its registered target.
  raise(num) {
    this.sock.write(frame(RAISE, num, 0, 0));
  }

  close() {
    this.sock.end();
  }
}

// Reads frames off the socket; calls onFrame(header, payload) for each.
function reader(sock, onFrame) {
  let buf = Buffer.alloc(0);
  sock.on("data", (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (buf.length < 16) return;
      const kind = buf[0];
      const len = kind === REPLY ? buf.readUInt32LE(4) : 0;
      if (len > MAX_PAYLOAD) return sock.destroy(new Error(`reply of ${len} bytes`));
      if (buf.length < 16 + len) return;
      const head = buf.subarray(0, 16);
      const payload = buf.subarray(16, 16 + len);
      buf = buf.subarray(16 + len);
      onFrame(head, payload);
    }
  });
}

// Connects, says hello and resolves with a Worker once the master answers.
function attach(path) {
  return new Promise((resolve, reject) => {
    // "@name" is an abstract socket: Node writes it with a leading NUL.
    const sock = net.createConnection(path.startsWith("@") ? "\0" + path.slice(1) : path);
    let worker = null;
    sock.on("error", (e) => (worker ? worker.sock.destroy() : reject(e)));
    sock.on("close", () => {
      if (!worker) reject(new Error("the master closed the attach socket before answering"));
    });
    sock.on("connect", () => {
      const hello = Buffer.from(JSON.stringify({ version: 1, role: "worker", fds: false }));
      sock.write(Buffer.concat([frame(REQUEST, 0, hello.length, 0), hello]));
    });
    let acked = 0n; // highest seq acked
    let ran = 0n; // highest seq whose handler returned
    reader(sock, (head, payload) => {
      const kind = head[0];
      if (worker === null) {
        const answer = kind === REPLY ? JSON.parse(payload.toString()) : null;
        if (answer && answer.Attached) {
          worker = new Worker(sock, answer.Attached);
          return resolve(worker);
        }
        sock.destroy();
        return reject(new Error(`attach refused: ${answer ? JSON.stringify(answer.Refused ?? answer) : "bad frame"}`));
      }
      if (kind === DELIVER) {
        const num = head[1], origin = head.readUInt32LE(4), seq = head.readBigUInt64LE(8);
        const fn = worker.handlers.get(num);
        try {
          if (fn) fn(num, origin);
        } catch (e) {
          console.error(`handler of signal ${num} threw:`, e);
        }
        ran = seq;
        // Ack once nothing more is read (setImmediate runs after the
        // frames of this read): cumulative, one ack for a batch.
        setImmediate(() => {
          if (ran > acked) {
            acked = ran;
            sock.write(frame(ACK, 0, 0, acked));
          }
        });
      } else if (kind === REPLY) {
        const id = head.readBigUInt64LE(8);
        const p = worker.pending.get(id);
        if (p) {
          worker.pending.delete(id);
          p.resolve(JSON.parse(payload.toString()));
        }
      } else {
        sock.destroy(new Error(`unexpected frame kind ${kind}`));
      }
    });
  });
}

module.exports = { attach };

// ---- the example program ---------------------------------------------------
async function main(argv) {
  const path = argv[0];
  if (!path) {
    console.error("usage: node flare-attach.js SOCKET [--register NUM:TARGET]... [--timer NUM:SECS]... [--raise NUM]...");
    process.exit(2);
  }
  let w;
  try {
    w = await attach(path);
  } catch (e) {
    console.log(`REFUSED ${e.message}`);
    process.exit(1);
  }
  console.log(`ATTACHED worker${w.worker} master=${w.masterPid}`);
  for (let i = 1; i < argv.length; i += 2) {
    const [opt, val] = [argv[i], argv[i + 1]];
    if (opt === "--register") {
      const [num, target] = val.split(":");
      await w.register(Number(num), target, (n, origin) => console.log(`RAN ${n} origin=${origin}`));
      console.log(`REGISTERED ${num} ${target}`);
    } else if (opt === "--timer") {
      const [num, secs] = val.split(":");
      console.log(`SOURCE ${await w.addTimer(Number(num), Number(secs))}`);
    }
  }
  await w.ready();
  console.log("READY");
  for (let i = 1; i < argv.length; i += 2) {
    if (argv[i] === "--raise") {
      w.raise(Number(argv[i + 1]));
      console.log(`RAISED ${argv[i + 1]}`);
    }
  }
  // Commands on stdin: "raise N"; EOF leaves.
  let line = "";
  process.stdin.on("data", (d) => {
    line += d;
    let i;
    while ((i = line.indexOf("\n")) >= 0) {
      const [cmd, arg] = line.slice(0, i).trim().split(/\s+/);
      line = line.slice(i + 1);
      if (cmd === "raise") {
        w.raise(Number(arg));
        console.log(`RAISED ${arg}`);
      }
    }
  });
  process.stdin.on("end", () => w.close());
  await w.closed;
  console.log("CLOSED");
}

if (require.main === module) main(process.argv.slice(2));
