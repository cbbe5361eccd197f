// The Vercel AI SDK, unmodified, reading streams the response cache replays: run by
// tests/test_ai_sdk.py against a proxy whose key's answers are cached.
//
// Each scenario streams the same prompt twice (a miss, then a hit replayed from the cache)
// and prints what both reads got, with the x-promptgate-cache header each answer carried.
// Environment: PROMPTGATE_URL, PROMPTGATE_KEY, CHAT_MODEL.
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { streamText } from "ai";

const env = process.env;
const baseURL = `${env.PROMPTGATE_URL}/v1`;
const seen = [];
// Notes the cache header of every answer, then hands the response on untouched.
const fetchNoting = async (url, init) => {
  const response = await fetch(url, init);
  seen.push(response.headers.get("x-promptgate-cache"));
  return response;
};
const openai = createOpenAI({ baseURL, apiKey: env.PROMPTGATE_KEY, fetch: fetchNoting });
const compatible = createOpenAICompatible({
  name: "promptgate",
  baseURL,
  apiKey: env.PROMPTGATE_KEY,
  includeUsage: true,
  fetch: fetchNoting,
});
const MODEL = env.CHAT_MODEL;

async function read(model, prompt) {
  const result = streamText({ model, prompt, temperature: 0, maxRetries: 0 });
  let text = "";
  for await (const delta of result.textStream) text += delta;
  return { text, usage: await result.usage, finishReason: await result.finishReason };
}

async function twice(model, prompt) {
  const first = await read(model, prompt);
  const second = await read(model, prompt);
  return { first, second, cache: seen.splice(0) };
}

const scenarios = {
  responses_streamText: () => twice(openai(MODEL), "[cache responses_streamText] hello"),
  chat_streamText: () => twice(openai.chat(MODEL), "[cache chat_streamText] hello"),
  compatible_streamText: () =>
    twice(compatible.chatModel(MODEL), "[cache compatible_streamText] hello"),
};

const results = {};
for (const [name, scenario] of Object.entries(scenarios)) {
  try {
    results[name] = { ok: true, ...(await scenario()) };
  } catch (error) {
    results[name] = { ok: false, error: String(error?.stack ?? error) };
  }
}
console.log(JSON.stringify(results));
