// The official TypeScript MCP client (@modelcontextprotocol/sdk) against
// simple_server: prints, as JSON, what the client surfaces for a refused call.
//
//   node overload_client.mjs --sdk DIR --url URL
//   node overload_client.mjs --sdk DIR --command PROGRAM [ARG...]   (stdio)
//
// DIR holds node_modules/@modelcontextprotocol/sdk. One 60 s `sleep` takes
// the only slot (its start is announced by a progress notification); a
// second call is then refused. Output: {"refused": OUTCOME, "ping_after": bool},
// OUTCOME one of {kind: "error", code, message, data} (an McpError),
// {kind: "result", result} (the CallToolResult), or
// {kind: "exception", type, code, message} (anything else thrown).
import path from "node:path";
import { pathToFileURL } from "node:url";

const argv = process.argv.slice(2);
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const sdkRoot = path.join(opt("--sdk"), "node_modules", "@modelcontextprotocol", "sdk", "dist", "esm");
const load = (rel) => import(pathToFileURL(path.join(sdkRoot, rel)).href);
const { Client } = await load("client/index.js");
const { McpError } = await load("types.js");

let transport;
if (opt("--url")) {
  const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
  transport = new StreamableHTTPClientTransport(new URL(opt("--url")));
} else {
  const { StdioClientTransport } = await load("client/stdio.js");
  const command = argv.slice(argv.indexOf("--command") + 1);
  transport = new StdioClientTransport({ command: command[0], args: command.slice(1), stderr: "ignore" });
}

const timer = setTimeout(() => {
  console.error("overload_client.mjs: timed out");
  process.exit(2);
}, 60_000);

async function outcome(client, name, args) {
  try {
    return { kind: "result", result: await client.callTool({ name, arguments: args }) };
  } catch (err) {
    if (err instanceof McpError) {
      const prefix = `MCP error ${err.code}: `;
      const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
      return { kind: "error", code: err.code, message, data: err.data ?? null };
    }
    return { kind: "exception", type: err?.constructor?.name ?? typeof err, code: err?.code ?? null, message: String(err?.message ?? err) };
  }
}

const client = new Client({ name: "mcp-backpressure-e2e", version: "0.0.0" });
client.onerror = () => {}; // a transport error is reported through the call
await client.connect(transport);
const stop = new AbortController();
let started;
const startedOnce = new Promise((resolve) => (started = resolve));
const held = client
  .callTool({ name: "sleep", arguments: { ms: 60_000 } }, undefined, { onprogress: () => started(), signal: stop.signal })
  .catch(() => null);
await startedOnce;
const refused = await outcome(client, "sleep", { ms: 1 });
let pingAfter = true;
try {
  await client.ping();
} catch {
  pingAfter = false;
}
stop.abort();
await held;
console.log(JSON.stringify({ refused, ping_after: pingAfter }));
clearTimeout(timer);
await client.close();
process.exit(0);
