// The Vercel AI SDK, unmodified, against promptgate: run by tests/test_ai_sdk.py.
//
// Each scenario's prompt starts with `[name]` so the test can find what the upstream
// received for it. Prints one JSON object: {scenario: {ok, ...what came back}}.
// Environment: PROMPTGATE_URL (the proxy's origin), PROMPTGATE_KEY (a client key),
// PROMPTGATE_BAD_KEY (a key the proxy refuses), CHAT_MODEL, EMBEDDING_MODEL, DENIED_MODEL.
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { APICallError, embedMany, generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const env = process.env;
const baseURL = `${env.PROMPTGATE_URL}/v1`;
const openai = createOpenAI({ baseURL, apiKey: env.PROMPTGATE_KEY });
const refused = createOpenAI({ baseURL, apiKey: env.PROMPTGATE_BAD_KEY });
const compatible = createOpenAICompatible({
  name: "promptgate",
  baseURL,
  apiKey: env.PROMPTGATE_KEY,
  includeUsage: true,
});
const MODEL = env.CHAT_MODEL;
const noRetries = { maxRetries: 0 };

const weatherTool = tool({
  description: "The weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});

async function collect(result) {
  let text = "";
  let parts = 0;
  for await (const delta of result.textStream) {
    text += delta;
    parts += 1;
  }
  return { text, parts, usage: await result.usage, finishReason: await result.finishReason };
}

// A stream's failure reaches `onError` and the stream's `error` parts; it does not throw.
async function streamFailure(model, prompt) {
  const errors = [];
  const result = streamText({ model, prompt, ...noRetries, onError: ({ error }) => errors.push(error) });
  let text = "";
  for await (const part of result.fullStream) {
    if (part.type === "text-delta") text += part.text;
  }
  return { text, errors: errors.map(describeError), finishReason: await result.finishReason };
}

function describeError(error) {
  return {
    name: error?.constructor?.name,
    isAPICallError: APICallError.isInstance(error),
    statusCode: error?.statusCode,
    message: String(error?.message ?? error),
  };
}

const scenarios = {
  responses_generateText: async () => {
    const { text, usage, finishReason } = await generateText({
      model: openai(MODEL),
      prompt: "[responses_generateText] hello",
      ...noRetries,
    });
    return { text, usage, finishReason };
  },
  responses_streamText: async () =>
    collect(streamText({ model: openai(MODEL), prompt: "[responses_streamText] hello", ...noRetries })),
  responses_toolLoop: async () => {
    const result = await generateText({
      model: openai(MODEL),
      prompt: "[responses_toolLoop] weather in Paris?",
      tools: { getWeather: weatherTool },
      stopWhen: stepCountIs(3),
      ...noRetries,
    });
    return {
      text: result.text,
      steps: result.steps.length,
      toolCalls: result.steps[0].toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
      toolResults: result.steps[0].toolResults.map((r) => r.output),
    };
  },
  responses_generateObject: async () => {
    const { object } = await generateObject({
      model: openai(MODEL),
      schema: z.object({ name: z.string(), age: z.number(), tags: z.array(z.string()) }),
      prompt: "[responses_generateObject] a person",
      ...noRetries,
    });
    return { object };
  },
  chat_generateText: async () => {
    const { text, usage } = await generateText({
      model: openai.chat(MODEL),
      prompt: "[chat_generateText] hello",
      ...noRetries,
    });
    return { text, usage };
  },
  chat_streamText: async () =>
    collect(streamText({ model: openai.chat(MODEL), prompt: "[chat_streamText] hello", ...noRetries })),
  compatible_generateText: async () => {
    const { text, usage } = await generateText({
      model: compatible.chatModel(MODEL),
      prompt: "[compatible_generateText] hello",
      ...noRetries,
    });
    return { text, usage };
  },
  compatible_streamText: async () =>
    collect(
      streamText({ model: compatible.chatModel(MODEL), prompt: "[compatible_streamText] hello", ...noRetries }),
    ),
  embedMany: async () => {
    const values = ["[embedMany] one", "two", "three"];
    const { embeddings } = await embedMany({
      model: openai.embedding(env.EMBEDDING_MODEL),
      values,
      ...noRetries,
    });
    return { count: embeddings.length, dimensions: embeddings.map((e) => e.length), first: embeddings[0].slice(0, 3) };
  },
  responses_broken_stream: async () => streamFailure(openai(MODEL), "[responses_broken_stream] x #standin:midError"),
  chat_broken_stream: async () => streamFailure(openai.chat(MODEL), "[chat_broken_stream] x #standin:cut"),
};

// Typed errors: each call must throw an APICallError carrying the HTTP status.
const failures = {
  error_401_responses: () => generateText({ model: refused(MODEL), prompt: "x", ...noRetries }),
  error_401_chat: () => generateText({ model: refused.chat(MODEL), prompt: "x", ...noRetries }),
  error_403_responses: () => generateText({ model: openai(env.DENIED_MODEL), prompt: "x", ...noRetries }),
  error_403_chat: () => generateText({ model: openai.chat(env.DENIED_MODEL), prompt: "x", ...noRetries }),
  error_429_responses: () => generateText({ model: openai(MODEL), prompt: "x #standin:429", ...noRetries }),
  error_429_chat: () => generateText({ model: openai.chat(MODEL), prompt: "x #standin:429", ...noRetries }),
  error_429_compatible: () =>
    generateText({ model: compatible.chatModel(MODEL), prompt: "x #standin:429", ...noRetries }),
};

const results = {};
for (const [name, run] of Object.entries(scenarios)) {
  try {
    results[name] = { ok: true, ...(await run()) };
  } catch (error) {
    results[name] = { ok: false, error: describeError(error) };
  }
}
for (const [name, run] of Object.entries(failures)) {
  try {
    await run();
    results[name] = { ok: true };
  } catch (error) {
    const lastError = error?.lastError ?? error; // a RetryError wraps the call's own error
    results[name] = { ok: false, error: describeError(lastError), responseBody: lastError?.responseBody };
  }
}
console.log(JSON.stringify(results));
