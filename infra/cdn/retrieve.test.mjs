// Tests of the retrieval edge function (infra/cdn/retrieve.js), run with `node --test infra/cdn/*.test.mjs`.
//
// retrieve.js is deployed as it is, so it exports nothing: these tests read its text, substitute
// the placeholders with render.mjs (as a deployment does) and evaluate it in a fresh `vm` context
// that offers only what the CloudFront Functions runtime 2.0 offers to it: `require('crypto')`
// and `Buffer`. Its top-level functions (handler, decide, ...) are then properties of the context.
// Every HMAC below comes from vectors.json, computed independently by make_vectors.py (Python).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, statSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import nodeCrypto from 'node:crypto';
import vm from 'node:vm';

import {
    render,
    validateKeys,
    KEY_PLACEHOLDER,
    REGION_PLACEHOLDER,
    MAX_FUNCTION_BYTES,
    TEMPLATE_PATH,
} from './render.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const TEMPLATE = readFileSync(TEMPLATE_PATH, 'utf8');
const VECTORS = JSON.parse(readFileSync(join(HERE, 'vectors.json'), 'utf8'));
const SECRETS = VECTORS.secrets;
const INSTANT = Object.fromEntries(VECTORS.instants.map((i) => [i.name, i]));
const MCC = VECTORS.mcc;

// The Python-computed HMAC for (secret label, period, hour[, mcc]); fails if it was not generated.
function mac(secret, period, hour, mcc = MCC) {
    const v = VECTORS.vectors.find(
        (x) => x.secret === secret && x.period === period && x.hour === hour && x.mcc === mcc,
    );
    assert.ok(v, `no vector for ${secret} ${mcc}:${period}:${hour}; extend make_vectors.py`);
    return v.hmac;
}

const p5 = (day) => String(day).padStart(5, '0');

// Evaluates `code` as the CloudFront Functions runtime would load it; `nowMs` fixes Date.now().
function load(code, nowMs) {
    const context = vm.createContext({
        require(name) {
            if (name !== 'crypto') {
                throw new Error(`module ${name} is not available in CloudFront Functions`);
            }
            return nodeCrypto;
        },
        Buffer,
    });
    vm.runInContext(code, context, { filename: 'retrieve.js' });
    if (nowMs !== undefined) {
        vm.runInContext(`Date.now = function () { return ${nowMs}; };`, context);
    }
    return context;
}

function deployed(nowMs, hmacKeyHex = SECRETS.primary, regionPath = '302') {
    return load(render(TEMPLATE, { hmacKeyHex, regionPath }), nowMs);
}

function viewerRequest(uri, method = 'GET') {
    return {
        version: '1.0',
        context: { eventType: 'viewer-request', distributionDomainName: 'd111111abcdef8.cloudfront.net' },
        viewer: { ip: '192.0.2.10' },
        request: {
            method,
            uri,
            querystring: { cachebust: { value: '1' } },
            headers: { host: { value: 'retrieval.example.ca' }, 'cache-control': { value: 'no-store' } },
            cookies: {},
        },
    };
}

// Objects made inside the vm context have that context's prototypes; compare them as plain data.
const plain = (value) => JSON.parse(JSON.stringify(value));

function call(fn, uri, method = 'GET') {
    return plain(fn.handler(viewerRequest(uri, method)));
}

function assertStatus(result, status) {
    assert.equal(result.statusCode, status, `expected ${status}, got ${JSON.stringify(result)}`);
    assert.equal(result.headers['cache-control'].value, 'no-store');
    assert.equal(typeof result.statusDescription, 'string');
    assert.ok(result.statusDescription.length > 0);
}

function assertRewritten(result, uri) {
    assert.equal(result.statusCode, undefined, `expected the request through, got ${JSON.stringify(result)}`);
    assert.equal(result.uri, uri);
    assert.deepEqual(result.querystring, {});
}

describe('HMAC vectors (Python) against the function', () => {
    test('every vector: hmacHex matches, and the key hex decodes the same in either case', () => {
        const fn = deployed(INSTANT.mid_hour.now_ms);
        assert.ok(VECTORS.vectors.length >= 100);
        for (const v of VECTORS.vectors) {
            const keys = fn.decodeKeys(SECRETS[v.secret]);
            assert.equal(keys.length, 1);
            assert.equal(fn.hmacHex(keys[0], v.mcc, v.period, v.hour), v.hmac, v.message);
            assert.equal(`${v.mcc}:${v.period}:${v.hour}`, v.message);
        }
    });

    test('hour and day numbers agree with Python at every instant, boundaries included', () => {
        const fn = deployed(0);
        for (const i of VECTORS.instants) {
            assert.equal(fn.hourNumber(i.now_ms), i.hour, i.iso);
            assert.equal(fn.dayNumber(i.now_ms), i.day, i.iso);
        }
    });

    test('the secrets cover 32, 48 and 100 bytes (over the hash block) and upper-case hex', () => {
        assert.equal(SECRETS.primary.length, 64);
        assert.equal(SECRETS.long48.length, 96);
        assert.equal(SECRETS.over_block.length, 200);
        assert.equal(SECRETS.upper, SECRETS.upper.toUpperCase());
    });
});

describe('1. HMAC: current hour +-1, exactly as the apps compute it', () => {
    const t = INSTANT.mid_hour;
    const today = p5(t.day);

    for (const offset of [0, -1, 1]) {
        test(`hour ${offset >= 0 ? '+' : ''}${offset} is accepted and rewritten to the object key`, () => {
            const fn = deployed(t.now_ms);
            const result = call(fn, `/retrieve/302/${today}/${mac('primary', today, t.hour + offset)}`);
            assertRewritten(result, `/retrieve/302/${today}`);
            assert.equal(result.method, 'GET');
            assert.equal(result.headers.host.value, 'retrieval.example.ca');
        });
    }

    for (const offset of [-2, 2]) {
        test(`hour ${offset > 0 ? '+' : ''}${offset} is refused with 401`, () => {
            const fn = deployed(t.now_ms);
            assertStatus(call(fn, `/retrieve/302/${today}/${mac('primary', today, t.hour + offset)}`), 401);
        });
    }

    test('wrong, upper-case, truncated, over-long, empty or extended HMACs get 401', () => {
        const fn = deployed(t.now_ms);
        const good = mac('primary', today, t.hour);
        const yesterday = p5(t.day - 1);
        const bad = [
            mac('primary', yesterday, t.hour), // valid, but for another day
            mac('long48', today, t.hour), // valid, but under another secret
            `${good.slice(0, 63)}${good[63] === '0' ? '1' : '0'}`, // last character changed
            good.toUpperCase(),
            good.slice(0, 63),
            good.slice(0, 32),
            `${good}0`,
            '',
            `${good}/`,
            `${good}/extra`,
            'zz'.repeat(32),
            '0'.repeat(64),
            `${good.slice(0, 62)}%30`,
        ];
        for (const m of bad) {
            assertStatus(call(fn, `/retrieve/302/${today}/${m}`), 401);
        }
        // and the same period with a good HMAC still passes
        assertRewritten(call(fn, `/retrieve/302/${today}/${good}`), `/retrieve/302/${today}`);
    });

    test('an HMAC of the wrong period is refused even when that period exists (00000 vs today)', () => {
        const fn = deployed(t.now_ms);
        assertStatus(call(fn, `/retrieve/302/00000/${mac('primary', today, t.hour)}`), 401);
        assertStatus(call(fn, `/retrieve/302/${today}/${mac('primary', '00000', t.hour)}`), 401);
    });

    test('boundary: exactly at the start of hour H, H-1 and H+1 pass, H-2 and H+2 do not', () => {
        const s = INSTANT.hour_start; // 11:00:00.000, hour H
        const fn = deployed(s.now_ms);
        const day = p5(s.day);
        for (const [offset, ok] of [[-2, false], [-1, true], [0, true], [1, true], [2, false]]) {
            const result = call(fn, `/retrieve/302/${day}/${mac('primary', day, s.hour + offset)}`);
            if (ok) {
                assertRewritten(result, `/retrieve/302/${day}`);
            } else {
                assertStatus(result, 401);
            }
        }
    });

    test('boundary: one millisecond earlier (hour H-1) the window moves back by one hour', () => {
        const e = INSTANT.hour_end; // 10:59:59.999, hour H-1
        const H = INSTANT.hour_start.hour;
        assert.equal(e.hour, H - 1);
        const fn = deployed(e.now_ms);
        const day = p5(e.day);
        const expectations = [[H - 3, false], [H - 2, true], [H - 1, true], [H, true], [H + 1, false]];
        for (const [hour, ok] of expectations) {
            const result = call(fn, `/retrieve/302/${day}/${mac('primary', day, hour)}`);
            if (ok) {
                assertRewritten(result, `/retrieve/302/${day}`);
            } else {
                assertStatus(result, 401);
            }
        }
    });

    test('other secrets: 48 bytes, 100 bytes and upper-case hex all work as HMAC_KEY', () => {
        for (const label of ['long48', 'over_block', 'upper']) {
            const fn = deployed(t.now_ms, SECRETS[label]);
            for (const offset of [-2, -1, 0, 1, 2]) {
                const result = call(fn, `/retrieve/302/${today}/${mac(label, today, t.hour + offset)}`);
                if (Math.abs(offset) <= 1) {
                    assertRewritten(result, `/retrieve/302/${today}`);
                } else {
                    assertStatus(result, 401);
                }
            }
            assertStatus(call(fn, `/retrieve/302/${today}/${mac('primary', today, t.hour)}`), 401);
        }
    });

    test('rotation: with two secrets configured, an HMAC under either one passes', () => {
        const fn = deployed(t.now_ms, `${SECRETS.primary},${SECRETS.long48}`);
        assertRewritten(call(fn, `/retrieve/302/${today}/${mac('primary', today, t.hour)}`), `/retrieve/302/${today}`);
        assertRewritten(call(fn, `/retrieve/302/00000/${mac('long48', '00000', t.hour + 1)}`), '/retrieve/302/00000');
        assertStatus(call(fn, `/retrieve/302/${today}/${mac('over_block', today, t.hour)}`), 401);
    });

    test('the region path is part of the message and baked in: another MCC is 404 (not ours)', () => {
        const fn310 = deployed(t.now_ms, SECRETS.primary, '310');
        assertRewritten(call(fn310, `/retrieve/310/${today}/${mac('primary', today, t.hour, '310')}`), `/retrieve/310/${today}`);
        assertStatus(call(fn310, `/retrieve/310/${today}/${mac('primary', today, t.hour)}`), 401);
        assertStatus(call(fn310, `/retrieve/302/${today}/${mac('primary', today, t.hour)}`), 404);
        const fn302 = deployed(t.now_ms);
        assertStatus(call(fn302, `/retrieve/310/${today}/${mac('primary', today, t.hour, '310')}`), 404);
    });
});

describe('2. method', () => {
    const t = INSTANT.mid_hour;
    const today = p5(t.day);

    for (const method of ['POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
        test(`${method} with a valid HMAC gets 405 with Allow: GET`, () => {
            const fn = deployed(t.now_ms);
            const result = call(fn, `/retrieve/302/${today}/${mac('primary', today, t.hour)}`, method);
            assertStatus(result, 405);
            assert.equal(result.headers.allow.value, 'GET');
        });
    }
});

describe('3. day window', () => {
    test('a future day is 404; today - 14 passes; today - 15 is 410 (mid-day)', () => {
        const t = INSTANT.mid_hour;
        const fn = deployed(t.now_ms);
        const req = (day) => call(fn, `/retrieve/302/${p5(day)}/${mac('primary', p5(day), t.hour)}`);
        assertStatus(req(t.day + 1), 404);
        assertRewritten(req(t.day), `/retrieve/302/${p5(t.day)}`);
        assertRewritten(req(t.day - 1), `/retrieve/302/${p5(t.day - 1)}`);
        assertRewritten(req(t.day - 14), `/retrieve/302/${p5(t.day - 14)}`);
        assertStatus(req(t.day - 15), 410);
    });

    test('at 00:00:00.000 UTC the new day is today; one millisecond earlier it is the future', () => {
        const m = INSTANT.midnight;
        const b = INSTANT.before_midnight;
        assert.equal(b.day, m.day - 1);
        const atMidnight = deployed(m.now_ms);
        const before = deployed(b.now_ms);
        const D = m.day;
        const url = (day, hour) => `/retrieve/302/${p5(day)}/${mac('primary', p5(day), hour)}`;
        // D: today at midnight, future one millisecond before (the HMAC hour is fine in both).
        assertRewritten(call(atMidnight, url(D, m.hour)), `/retrieve/302/${p5(D)}`);
        assertStatus(call(before, url(D, b.hour + 1)), 404);
        // The 14-day window moves at midnight too.
        assertRewritten(call(atMidnight, url(D - 14, m.hour)), `/retrieve/302/${p5(D - 14)}`);
        assertStatus(call(atMidnight, url(D - 15, m.hour)), 410);
        assertRewritten(call(before, url(D - 15, b.hour)), `/retrieve/302/${p5(D - 15)}`);
        assertStatus(call(before, url(D - 16, b.hour)), 410);
        assertStatus(call(atMidnight, url(D + 1, m.hour)), 404);
    });

    test('00000 (the last 14 days bundle) is always allowed and rewritten', () => {
        for (const i of VECTORS.instants) {
            const fn = deployed(i.now_ms);
            for (const offset of [-1, 0, 1]) {
                assertRewritten(call(fn, `/retrieve/302/00000/${mac('primary', '00000', i.hour + offset)}`), '/retrieve/302/00000');
            }
        }
    });
});

describe('paths that are not /retrieve/{MCC}/{5 digits}/{hmac}', () => {
    test('get 404, whatever the method, before any HMAC check', () => {
        const t = INSTANT.mid_hour;
        const today = p5(t.day);
        const good = mac('primary', today, t.hour);
        const fn = deployed(t.now_ms);
        const paths = [
            `/retrieve/302/${today}`, // the object key itself: never served without an HMAC
            `/retrieve/302/${today}${good}`,
            `/retrieve/302/2042/${good}`,
            `/retrieve/302/${today}0/${good}`,
            `/retrieve/302/abcde/${good}`,
            `/retrieve/30/${today}/${good}`,
            `/retrieve/3020/${today}/${good}`,
            `/retrieve//${today}/${good}`,
            `/retrieve/302//${today}/${good}`,
            `//retrieve/302/${today}/${good}`,
            `/Retrieve/302/${today}/${good}`,
            `/retrieve/302/${today.slice(0, 4)}%3${today[4]}/${good}`,
            `/prefix/retrieve/302/${today}/${good}`,
            '/retrieve/302/',
            '/retrieve/',
            '/retrieve',
            '/',
            '',
            '/CA/index.txt',
            '/exposure-configuration/CA.json',
        ];
        for (const path of paths) {
            for (const method of ['GET', 'POST']) {
                assertStatus(call(fn, path, method), 404);
            }
        }
    });
});

describe('order of the checks', () => {
    const t = INSTANT.mid_hour;
    const fn = () => deployed(t.now_ms);
    const url = (day, hour = t.hour) => `/retrieve/302/${p5(day)}/${mac('primary', p5(day), hour)}`;

    test('bad HMAC + POST -> 401, not 405', () => {
        assertStatus(call(fn(), url(t.day, t.hour + 2), 'POST'), 401);
        assertStatus(call(fn(), `/retrieve/302/${p5(t.day)}/`, 'POST'), 401);
    });

    test('good HMAC + future day + POST -> 405, not 404', () => {
        assertStatus(call(fn(), url(t.day + 1), 'POST'), 405);
    });

    test('good HMAC + too old day + HEAD -> 405, not 410', () => {
        assertStatus(call(fn(), url(t.day - 15), 'HEAD'), 405);
    });

    test('bad HMAC + future or too old day -> 401, not 404 / 410', () => {
        assertStatus(call(fn(), url(t.day + 1, t.hour - 2)), 401);
        assertStatus(call(fn(), url(t.day - 15, t.hour + 2)), 401);
    });

    test('decide() gives the same answers without the event, with `now` as a parameter', () => {
        const f = fn();
        const keys = f.decodeKeys(SECRETS.primary);
        const d = (method, path, now = t.now_ms) => plain(f.decide(method, path, now, '302', keys));
        assert.deepEqual(d('GET', url(t.day)), { status: 200, uri: `/retrieve/302/${p5(t.day)}` });
        assert.deepEqual(d('POST', `/retrieve/302/${p5(t.day + 1)}/${'0'.repeat(64)}`), { status: 401 });
        assert.deepEqual(d('POST', url(t.day + 1)), { status: 405 });
        assert.deepEqual(d('GET', url(t.day + 1)), { status: 404 });
        assert.deepEqual(d('GET', url(t.day - 15)), { status: 410 });
        assert.deepEqual(d('GET', '/retrieve/302/00000'), { status: 404 });
        // the same request 2 hours later is no longer valid
        assert.deepEqual(d('GET', url(t.day), t.now_ms + 2 * 3600000), { status: 401 });
    });
});

describe('responses generated by the function', () => {
    test('are CloudFront Functions response objects with cache-control: no-store', () => {
        const fn = deployed(INSTANT.mid_hour.now_ms);
        for (const [status, reason] of [[401, 'Unauthorized'], [404, 'Not Found'], [405, 'Method Not Allowed'], [410, 'Gone']]) {
            const r = plain(fn.errorResponse(status));
            assert.equal(r.statusCode, status);
            assert.equal(r.statusDescription, reason);
            assert.deepEqual(r.headers['cache-control'], { value: 'no-store' });
            assert.equal(r.body, undefined);
        }
    });
});

describe('deployment: placeholders and the render step', () => {
    test('the template holds each placeholder exactly once', () => {
        assert.equal(TEMPLATE.split(KEY_PLACEHOLDER).length - 1, 1);
        assert.equal(TEMPLATE.split(REGION_PLACEHOLDER).length - 1, 1);
        assert.equal(KEY_PLACEHOLDER, '__HMAC_KEY_HEX__');
        assert.equal(REGION_PLACEHOLDER, '__REGION_PATH__');
    });

    test('render substitutes both placeholders (secret normalised to lower case)', () => {
        const code = render(TEMPLATE, { hmacKeyHex: SECRETS.upper, regionPath: '302' });
        assert.ok(!code.includes(KEY_PLACEHOLDER));
        assert.ok(!code.includes(REGION_PLACEHOLDER));
        assert.ok(code.includes(`var HMAC_KEY_HEX = '${SECRETS.upper.toLowerCase()}';`));
        assert.ok(code.includes("var REGION_PATH = '302';"));
        const rotation = render(TEMPLATE, { hmacKeyHex: ` ${SECRETS.primary} , ${SECRETS.long48}\n`, regionPath: '302' });
        assert.ok(rotation.includes(`var HMAC_KEY_HEX = '${SECRETS.primary},${SECRETS.long48}';`));
        assert.equal(render(TEMPLATE, { hmacKeyHex: SECRETS.primary }).includes("var REGION_PATH = '302';"), true);
    });

    test('render refuses a short, non-hex, odd-length, empty or duplicated secret', () => {
        const refused = [
            [undefined, /missing/],
            ['', /missing/],
            ['   ', /missing/],
            ['ab'.repeat(31), /31 bytes; at least 32 bytes/],
            ['0'.repeat(62), /31 bytes/],
            [`${SECRETS.primary.slice(0, 63)}g`, /not hex/],
            [`${SECRETS.primary}0`, /not hex/],
            [`0x${SECRETS.primary}`, /not hex/],
            [Buffer.from(SECRETS.primary, 'hex').toString('base64'), /not hex/],
            [`${SECRETS.primary},`, /secret 2 of HMAC_KEY is 0 bytes/],
            [`${SECRETS.primary},${'ab'.repeat(16)}`, /secret 2 of HMAC_KEY is 16 bytes/],
            [`${SECRETS.primary},${SECRETS.primary.toUpperCase()}`, /same secret twice/],
            [Array(5).fill(0).map((_, i) => String(i).repeat(64)).join(','), /at most 4/],
        ];
        for (const [value, message] of refused) {
            assert.throws(() => render(TEMPLATE, { hmacKeyHex: value, regionPath: '302' }), message, String(value));
        }
        assert.equal(validateKeys('AB'.repeat(32)), 'ab'.repeat(32));
    });

    test('render refuses a region path that is not 3 digits', () => {
        for (const region of ['30', '3020', 'abc', '', ' 302', '30/']) {
            assert.throws(() => render(TEMPLATE, { hmacKeyHex: SECRETS.primary, regionPath: region }), /COMPAT_REGION_PATH/);
        }
    });

    test('an unrendered template fails closed: 404 (no region), or 401 (region but no key)', () => {
        const t = INSTANT.mid_hour;
        const today = p5(t.day);
        const path = `/retrieve/302/${today}/${mac('primary', today, t.hour)}`;
        assertStatus(call(load(TEMPLATE, t.now_ms), path), 404);
        const regionOnly = TEMPLATE.replace(REGION_PLACEHOLDER, '302');
        const f = load(regionOnly, t.now_ms);
        assert.equal(f.KEYS.length, 0);
        assertStatus(call(f, path), 401);
        // and a key list with one invalid part is no key at all
        const badList = regionOnly.replace(KEY_PLACEHOLDER, `${SECRETS.primary},xyz`);
        assertStatus(call(load(badList, t.now_ms), path), 401);
    });

    test('render.mjs command line: stdout, --out with mode 0600, refusal with exit status 2', () => {
        const script = join(HERE, 'render.mjs');
        const env = (extra) => ({ PATH: process.env.PATH, ...extra });
        const ok = spawnSync(process.execPath, [script], { env: env({ HMAC_KEY: SECRETS.primary }), encoding: 'utf8' });
        assert.equal(ok.status, 0, ok.stderr);
        assert.equal(ok.stdout, render(TEMPLATE, { hmacKeyHex: SECRETS.primary, regionPath: '302' }));

        const other = spawnSync(process.execPath, [script], {
            env: env({ HMAC_KEY: SECRETS.primary, COMPAT_REGION_PATH: '310' }),
            encoding: 'utf8',
        });
        assert.equal(other.status, 0, other.stderr);
        assert.ok(other.stdout.includes("var REGION_PATH = '310';"));

        const dir = mkdtempSync(join(tmpdir(), 'cdn-render-'));
        try {
            const out = join(dir, 'retrieve.rendered.js');
            const written = spawnSync(process.execPath, [script, '--out', out], {
                env: env({ HMAC_KEY: SECRETS.long48 }),
                encoding: 'utf8',
            });
            assert.equal(written.status, 0, written.stderr);
            assert.equal(written.stdout, '');
            assert.equal(statSync(out).mode & 0o777, 0o600);
            assert.equal(readFileSync(out, 'utf8'), render(TEMPLATE, { hmacKeyHex: SECRETS.long48 }));

            for (const bad of [{}, { HMAC_KEY: 'ab'.repeat(31) }, { HMAC_KEY: 'xy'.repeat(32) },
                { HMAC_KEY: SECRETS.primary, COMPAT_REGION_PATH: '3020' }]) {
                const refused = spawnSync(process.execPath, [script, '--out', join(dir, 'refused.js')], {
                    env: env(bad),
                    encoding: 'utf8',
                });
                assert.equal(refused.status, 2, JSON.stringify(bad));
                assert.equal(refused.stdout, '');
                assert.match(refused.stderr, /^render\.mjs: /);
                assert.throws(() => statSync(join(dir, 'refused.js')));
            }
            const refusedArg = spawnSync(process.execPath, [script, 'extra'], {
                env: env({ HMAC_KEY: SECRETS.primary }),
                encoding: 'utf8',
            });
            assert.equal(refusedArg.status, 2);
            assert.equal(refusedArg.stdout, '');
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
});

describe('stays within the CloudFront Functions runtime', () => {
    const code = TEMPLATE.replace(/^\s*\/\/.*$/gm, ''); // code without its comment lines

    test('defines function handler(event) and needs nothing but crypto and Buffer', () => {
        assert.match(TEMPLATE, /^function handler\(event\) \{$/m);
        assert.deepEqual([...code.matchAll(/require\(\s*'([^']*)'\s*\)/g)].map((m) => m[1]), ['crypto']);
        // Evaluated with only require('crypto') and Buffer available (see load()): no other global.
        const fn = deployed(INSTANT.mid_hour.now_ms);
        assert.equal(typeof fn.handler, 'function');
    });

    test('uses no module system, Node globals, timers, async code or dynamic evaluation', () => {
        const forbidden = [
            /\bmodule\b/, /\bexports\b/, /\bprocess\b/, /\bglobal\b/, /\bimport\b/, /\bexport\b/,
            /\bsetTimeout\b/, /\bsetImmediate\b/, /\bsetInterval\b/, /\basync\b/, /\bawait\b/,
            /\bPromise\b/, /\beval\b/, /\bnew Function\b/, /\bconsole\b/, /\btimingSafeEqual\b/,
            /\brandom/, /\$\{/, /%\{/,
        ];
        for (const pattern of forbidden) {
            assert.doesNotMatch(code, pattern);
        }
        // Only the crypto calls the runtime documents: createHmac('sha256', key).update(s).digest('hex').
        assert.deepEqual([...code.matchAll(/crypto\.(\w+)/g)].map((m) => m[1]), ['createHmac']);
        assert.match(code, /\.update\([^)]*\)\.digest\('hex'\)/);
        assert.deepEqual([...new Set([...code.matchAll(/Buffer\.(\w+)/g)].map((m) => m[1]))], ['from']);
    });

    test('the rendered function fits the 10 KB limit, even with 4 secrets of 128 bytes', () => {
        const four = Array(4).fill(0).map((_, i) => String(i + 1).repeat(256)).join(',');
        const code4 = render(TEMPLATE, { hmacKeyHex: four, regionPath: '302' });
        assert.ok(Buffer.byteLength(code4) <= MAX_FUNCTION_BYTES, `${Buffer.byteLength(code4)} bytes`);
    });
});

describe('vectors.json is what make_vectors.py produces', () => {
    const python = spawnSync('python3', ['--version'], { encoding: 'utf8' });
    test('regenerating gives the committed file', { skip: python.status !== 0 && 'python3 not available' }, () => {
        const run = spawnSync('python3', [join(HERE, 'make_vectors.py'), '--stdout'], { encoding: 'utf8' });
        assert.equal(run.status, 0, run.stderr);
        assert.equal(run.stdout, readFileSync(join(HERE, 'vectors.json'), 'utf8'));
    });
});
