// openai_sdk.cjs - the official OpenAI JavaScript SDK (npm package `openai`) against a
// running q3serve: a non-streamed and a streamed greedy chat, each checked against the
// text the caller expects (q3run --chat --temp 0), and an API error surfacing as the
// SDK's APIError with its status. usage: node openai_sdk.cjs DIR BASE_URL KEY EXPECTED_FILE
// DIR: where `openai` is installed (its node_modules is searched). Exit 0 all passed, 1 not.
const { createRequire } = require('module');
const fs = require('fs');
const path = require('path');
const [dir, baseURL, apiKey, expectedFile] = process.argv.slice(2);
const OpenAI = createRequire(path.join(path.resolve(dir), 'x.js'))('openai');
const want = fs.readFileSync(expectedFile, 'utf8').replace(/\n$/, '');
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
const ask = { model: 'demo-tiny', messages: [{ role: 'user', content: 'What is a license?' }], max_tokens: 24, temperature: 0 };
let fails = 0;
const check = (name, ok, detail) => {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : ': ' + detail}`);
    if (!ok) fails++;
};
(async () => {
    const whole = await client.chat.completions.create(ask);
    const text = whole.choices[0].message.content;
    check('SDK chat, not streamed = q3run --chat --temp 0', text === want, JSON.stringify(text));
    check('SDK chat: usage and finish_reason', whole.usage.completion_tokens === 24 && whole.choices[0].finish_reason === 'length',
        JSON.stringify(whole.usage));
    const stream = await client.chat.completions.create({ ...ask, stream: true });
    let streamed = '', finish = null;
    for await (const chunk of stream) {
        const c = chunk.choices[0];
        if (!c) continue;
        streamed += c.delta.content || '';
        if (c.finish_reason) finish = c.finish_reason;
    }
    check('SDK chat, streamed = q3run --chat --temp 0', streamed === want && finish === 'length', JSON.stringify(streamed));
    try {
        await client.chat.completions.create({ ...ask, temperature: 9 });
        check('SDK: a bad field is an APIError 400', false, 'accepted');
    } catch (e) {
        check('SDK: a bad field is an APIError 400', e instanceof OpenAI.APIError && e.status === 400, String(e));
    }
    process.exit(fails ? 1 : 0);
})().catch((e) => {
    console.log(`FAIL the SDK threw: ${e}`);
    process.exit(1);
});
