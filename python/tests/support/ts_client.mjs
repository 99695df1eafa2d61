// The overload scenario of py_client.py, driven by the official TypeScript
// client (@modelcontextprotocol/sdk); prints JSON.
//
//   node ts_client.mjs --sdk DIR --server-python PY [--url URL]
//
// DIR is where the SDK is installed (DIR/node_modules/@modelcontextprotocol/sdk).
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const argv = process.argv.slice(2);
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const sdkRoot = path.join(opt("--sdk"), "node_modules", "@modelcontextprotocol", "sdk", "dist", "esm");
const load = (rel) => import(pathToFileURL(path.join(sdkRoot, rel)).href);
const { Client } = await load("client/index.js");
const { McpError } = await load("types.js");

const here = path.dirname(fileURLToPath(import.meta.url));
let transport;
if (opt("--url")) {
  const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
  transport = new StreamableHTTPClientTransport(new URL(opt("--url")));
} else {
  const { StdioClientTransport } = await load("client/stdio.js");
  transport = new StdioClientTransport({
    command: opt("--server-python"),
    args: [path.join(here, "server.py")],
    env: { ...process.env },
    stderr: "ignore",
  });
}

async function call(client, name, args) {
  try {
    const result = await client.callTool({ name, arguments: args });
    const text = (result.content ?? []).map((b) => b.text ?? "").join("");
    return {
      kind: "result",
      isError: result.isError === true,
      text,
      structuredContent: result.structuredContent ?? null,
      meta: result._meta ?? null,
    };
  } catch (err) {
    if (err instanceof McpError) {
      // McpError's own message is "MCP error <code>: <message>".
      const prefix = `MCP error ${err.code}: `;
      const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
      return { kind: "error", code: err.code, message, data: err.data ?? null };
    }
    throw err;
  }
}

const readText = async (client, uri) => (await client.readResource({ uri })).contents[0].text;

const timer = setTimeout(() => {
  console.error("ts_client: timed out");
  process.exit(2);
}, 60_000);
const client = new Client({ name: "mcp-backpressure-ts-test", version: "0.0.0" });
await client.connect(transport);
const held = call(client, "hold", { key: "a" });
await readText(client, "entered://1");
const overload = await call(client, "echo", { message: "hi" });
await client.ping();
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
await readText(client, "release://a");
const released = await held;
const overloadsSeen = JSON.parse(await readText(client, "overloads://seen"));
const metricsAfter = JSON.parse(await readText(client, "metrics://now"));
console.log(JSON.stringify({ overload, ping: true, tools, released, overloads_seen: overloadsSeen, metrics_after: metricsAfter }));
clearTimeout(timer);
await client.close();
process.exit(0);
