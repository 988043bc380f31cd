// The Vercel AI SDK as a gateway client: node run.mjs <generate|stream> <baseURL> <key> <model> <prompt>
// Prints one JSON line: the text, the usage the SDK read, the headers it sent, or its error.
import { generateText, streamText } from "ai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";

const [mode, baseURL, apiKey, modelId, prompt] = process.argv.slice(2);
const sent = [];
const recordingFetch = async (url, init) => {
  sent.push({ headers: Object.fromEntries(new Headers(init?.headers ?? {}).entries()),
              body: init?.body ? JSON.parse(init.body) : null });
  return fetch(url, init);
};
const provider = createOpenAICompatible({ name: "silk", baseURL, apiKey, includeUsage: true,
                                          fetch: recordingFetch });
const model = provider.chatModel(modelId);

try {
  let text, usage;
  if (mode === "generate") {
    const result = await generateText({ model, prompt, maxRetries: 0 });
    ({ text, usage } = result);
  } else {
    const errors = [];
    const result = streamText({ model, prompt, maxRetries: 0,
                                onError: ({ error }) => errors.push(String(error)) });
    text = "";
    for await (const piece of result.textStream) text += piece;
    usage = await result.usage;
    if (errors.length) throw new Error(errors.join("; "));
  }
  console.log(JSON.stringify({ ok: true, text, usage, sent }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.message ?? error), sent }));
}
