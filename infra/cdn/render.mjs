#!/usr/bin/env node
// Renders infra/cdn/retrieve.js into the code to deploy as a CloudFront Function by substituting
// its two placeholders:
//
//   HMAC_KEY=<hex> [COMPAT_REGION_PATH=302] node infra/cdn/render.mjs [--out FILE]
//
// HMAC_KEY is the apps' HMAC_KEY: hex, at least 32 bytes; during a rotation, up to 4 such secrets
// separated by commas. COMPAT_REGION_PATH is the MCC in the apps' URLs (3 digits, default 302).
// The secret is read from the environment, never from the command line. Without --out the
// rendered code goes to standard output; with --out it is written to FILE with mode 0600.
// Anything invalid is refused with a message and exit status 2, and nothing is written.

import { readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const KEY_PLACEHOLDER = '__HMAC_KEY_HEX__';
export const REGION_PLACEHOLDER = '__REGION_PATH__';
export const TEMPLATE_PATH = join(dirname(fileURLToPath(import.meta.url)), 'retrieve.js');
export const MIN_KEY_BYTES = 32;
export const MAX_KEYS = 4;
// CloudFront Functions refuses function code larger than this.
export const MAX_FUNCTION_BYTES = 10240;

// Returns the normalised key list (lower-case hex, comma-separated) or throws.
export function validateKeys(value) {
    if (typeof value !== 'string' || value.trim() === '') {
        throw new Error('HMAC_KEY is missing: set it to the apps\' HMAC_KEY (hex, at least 32 bytes)');
    }
    const parts = value.split(',').map((part) => part.trim());
    if (parts.length > MAX_KEYS) {
        throw new Error(`HMAC_KEY lists ${parts.length} secrets; at most ${MAX_KEYS} are accepted`);
    }
    parts.forEach((part, i) => {
        const which = parts.length > 1 ? `secret ${i + 1} of HMAC_KEY` : 'HMAC_KEY';
        if (!/^[0-9a-fA-F]*$/.test(part) || part.length % 2 !== 0) {
            throw new Error(`${which} is not hex (an even number of the characters 0-9 a-f)`);
        }
        if (part.length / 2 < MIN_KEY_BYTES) {
            throw new Error(`${which} is ${part.length / 2} bytes; at least ${MIN_KEY_BYTES} bytes (${2 * MIN_KEY_BYTES} hex characters) are required`);
        }
    });
    if (new Set(parts.map((p) => p.toLowerCase())).size !== parts.length) {
        throw new Error('HMAC_KEY lists the same secret twice');
    }
    return parts.map((p) => p.toLowerCase()).join(',');
}

export function validateRegionPath(value) {
    if (typeof value !== 'string' || !/^[0-9]{3}$/.test(value)) {
        throw new Error(`COMPAT_REGION_PATH must be the 3-digit MCC the apps send (e.g. 302), not ${JSON.stringify(value)}`);
    }
    return value;
}

function replaceOnce(text, placeholder, value) {
    const count = text.split(placeholder).length - 1;
    if (count !== 1) {
        throw new Error(`the template holds ${placeholder} ${count} times; exactly once is expected`);
    }
    return text.replace(placeholder, () => value);
}

// Substitutes both placeholders of `template` (the text of retrieve.js) and returns the code.
export function render(template, { hmacKeyHex, regionPath = '302' } = {}) {
    const keys = validateKeys(hmacKeyHex);
    const region = validateRegionPath(regionPath);
    let code = replaceOnce(template, KEY_PLACEHOLDER, keys);
    code = replaceOnce(code, REGION_PLACEHOLDER, region);
    const size = Buffer.byteLength(code, 'utf8');
    if (size > MAX_FUNCTION_BYTES) {
        throw new Error(`the rendered function is ${size} bytes; CloudFront Functions accepts at most ${MAX_FUNCTION_BYTES}`);
    }
    return code;
}

function main(argv, env) {
    let out = null;
    for (let i = 0; i < argv.length; i++) {
        if (argv[i] === '--out' && i + 1 < argv.length) {
            out = argv[++i];
        } else {
            throw new Error(`unknown argument ${JSON.stringify(argv[i])}; usage: HMAC_KEY=<hex> [COMPAT_REGION_PATH=302] render.mjs [--out FILE]`);
        }
    }
    const code = render(readFileSync(TEMPLATE_PATH, 'utf8'), {
        hmacKeyHex: env.HMAC_KEY,
        regionPath: env.COMPAT_REGION_PATH === undefined || env.COMPAT_REGION_PATH === '' ? '302' : env.COMPAT_REGION_PATH,
    });
    if (out === null) {
        process.stdout.write(code);
    } else {
        writeFileSync(out, code, { mode: 0o600 });
        chmodSync(out, 0o600);
    }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
    try {
        main(process.argv.slice(2), process.env);
    } catch (err) {
        process.stderr.write(`render.mjs: ${err.message}\n`);
        process.exit(2);
    }
}
