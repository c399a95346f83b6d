// Reads an MCAP with @mcap/core (the reader Foxglove's app uses) and decodes every message
// with protobufjs from the FileDescriptorSet embedded in the file (json channels with
// JSON.parse). Writes one JSON line per message: {topic, encoding, schema, logTime, message};
// bytes fields become {"$bytes": <hex sha256>, "length": n}. Exit 1 on any failure.
//   node read_export.mjs IN.mcap OUT.jsonl
import { createHash } from "node:crypto";
import { open, writeFile } from "node:fs/promises";
import { McapIndexedReader } from "@mcap/core";
import { loadDecompressHandlers } from "@mcap/support";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor/index.js";

const [input, output] = process.argv.slice(2);
const fh = await open(input, "r");
const size = (await fh.stat()).size;
const readable = {
  size: async () => BigInt(size),
  read: async (offset, length) => {
    const buf = Buffer.alloc(Number(length));
    await fh.read(buf, 0, Number(length), Number(offset));
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
  },
};
const reader = await McapIndexedReader.Initialize({
  readable,
  decompressHandlers: await loadDecompressHandlers(),
});
const decoders = new Map();
for (const [id, ch] of reader.channelsById) {
  const schema = reader.schemasById.get(ch.schemaId);
  if (ch.messageEncoding === "protobuf") {
    if (schema?.encoding !== "protobuf") throw new Error(`${ch.topic}: protobuf without schema`);
    const fds = descriptor.FileDescriptorSet.decode(schema.data);
    const root = protobuf.Root.fromDescriptor(fds);
    const type = root.lookupType(schema.name);
    decoders.set(id, (data) => type.toObject(type.decode(data), { longs: String, defaults: true }));
  } else if (ch.messageEncoding === "json") {
    const td = new TextDecoder();
    decoders.set(id, (data) => JSON.parse(td.decode(data)));
  } else {
    throw new Error(`${ch.topic}: message encoding ${ch.messageEncoding} is not one Foxglove decodes`);
  }
}
const bytesOut = (v) => {
  if (v instanceof Uint8Array) {
    return { $bytes: createHash("sha256").update(v).digest("hex"), length: v.length };
  }
  if (Array.isArray(v)) return v.map(bytesOut);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, bytesOut(x)]));
  }
  return v;
};
const lines = [];
for await (const m of reader.readMessages()) {
  const ch = reader.channelsById.get(m.channelId);
  const schema = reader.schemasById.get(ch.schemaId);
  lines.push(JSON.stringify({
    topic: ch.topic, encoding: ch.messageEncoding, schema: schema?.name ?? "",
    logTime: m.logTime.toString(), message: bytesOut(decoders.get(m.channelId)(m.data)),
  }, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v)));
}
await writeFile(output, lines.join("\n") + "\n");
await fh.close();
