// Optional second engine: when the `njs` command-line utility (nginx JavaScript; Debian package
// `njs`) is installed, run the rendered retrieve.js in it too, against every Python vector and a
// few decisions. njs is not the CloudFront runtime, but it is a small ES5-based engine with the
// same documented `crypto` and `Buffer` subset and without Node's globals, so it catches code that
// only works in Node. Skipped (and reported as skipped) when `njs` is not on PATH.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { render, TEMPLATE_PATH } from './render.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const VECTORS = JSON.parse(readFileSync(join(HERE, 'vectors.json'), 'utf8'));
const probe = spawnSync('njs', ['-v'], { encoding: 'utf8' });
const skip = probe.error || probe.status !== 0 ? 'njs is not installed (apt-get install njs)' : false;

// Runs in njs after the rendered function; prints one JSON line with what it found.
const HARNESS = `
var mismatches = [];
V.vectors.forEach(function (v) {
    var keys = decodeKeys(V.secrets[v.secret]);
    if (keys.length !== 1 || hmacHex(keys[0], v.mcc, v.period, v.hour) !== v.hmac) {
        mismatches.push(v.secret + ' ' + v.message);
    }
});
function vec(period, hour) {
    return V.vectors.filter(function (v) {
        return v.secret === 'primary' && v.mcc === '302' && v.period === period && v.hour === hour;
    })[0].hmac;
}
var t = V.instants[0];
var d = function (day) { return String(day).padStart(5, '0'); };
var path = function (day, hour) { return '/retrieve/302/' + d(day) + '/' + vec(d(day), hour); };
var decisions = [
    decide('GET', path(t.day, t.hour - 1), t.now_ms, '302', KEYS),
    decide('GET', path(t.day, t.hour + 2), t.now_ms, '302', KEYS),
    decide('POST', path(t.day, t.hour), t.now_ms, '302', KEYS),
    decide('GET', path(t.day + 1, t.hour), t.now_ms, '302', KEYS),
    decide('GET', path(t.day - 15, t.hour), t.now_ms, '302', KEYS),
    decide('GET', '/retrieve/302/00000/' + vec('00000', t.hour + 1), t.now_ms, '302', KEYS),
    decide('GET', '/retrieve/302/' + d(t.day), t.now_ms, '302', KEYS)
];
var live = hmacHex(KEYS[0], '302', d(dayNumber(Date.now())), hourNumber(Date.now()));
var through = handler({ request: { method: 'GET', uri: '/retrieve/302/' + d(dayNumber(Date.now())) + '/' + live,
    querystring: { q: { value: '1' } }, headers: {}, cookies: {} } });
var refused = handler({ request: { method: 'GET', uri: '/retrieve/302/' + d(dayNumber(Date.now())) + '/',
    querystring: {}, headers: {}, cookies: {} } });
console.log(JSON.stringify({ checked: V.vectors.length, mismatches: mismatches, decisions: decisions,
    through: through, refused: refused, today: d(dayNumber(Date.now())) }));
`;

test('the rendered function gives the same answers in njs', { skip }, () => {
    const code = render(readFileSync(TEMPLATE_PATH, 'utf8'), { hmacKeyHex: VECTORS.secrets.primary, regionPath: '302' });
    const dir = mkdtempSync(join(tmpdir(), 'cdn-njs-'));
    try {
        const file = join(dir, 'run.js');
        writeFileSync(file, `${code}\nvar V = ${JSON.stringify(VECTORS)};\n${HARNESS}`);
        const run = spawnSync('njs', [file], { encoding: 'utf8' });
        assert.equal(run.status, 0, run.stderr + run.stdout);
        const out = JSON.parse(run.stdout.trim().split('\n').pop());
        assert.equal(out.checked, VECTORS.vectors.length);
        assert.deepEqual(out.mismatches, []);
        const t = VECTORS.instants[0];
        const p = (day) => String(day).padStart(5, '0');
        assert.deepEqual(out.decisions, [
            { status: 200, uri: `/retrieve/302/${p(t.day)}` },
            { status: 401 },
            { status: 405 },
            { status: 404 },
            { status: 410 },
            { status: 200, uri: '/retrieve/302/00000' },
            { status: 404 },
        ]);
        assert.equal(out.through.uri, `/retrieve/302/${out.today}`);
        assert.deepEqual(out.through.querystring, {});
        assert.equal(out.through.statusCode, undefined);
        assert.deepEqual(out.refused, {
            statusCode: 401,
            statusDescription: 'Unauthorized',
            headers: { 'cache-control': { value: 'no-store' } },
        });
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});
