// Sign webhook bodies with GitHub's own code (@octokit/webhooks-methods).
// stdin: JSON {"secret": "...", "bodies": ["...", ...]}; stdout: JSON ["sha256=...", ...]
import { sign } from "@octokit/webhooks-methods";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { secret, bodies } = JSON.parse(input);
const signatures = await Promise.all(bodies.map((body) => sign(secret, body)));
process.stdout.write(JSON.stringify(signatures));
