// Diagnosis Server: retrieval edge function for the COVID Alert apps (DESIGN §4.3).
// CloudFront Functions, runtime cloudfront-js-2.0, viewer-request event, associated only with the
// "/retrieve/*" cache behaviour. Turns GET /retrieve/{MCC}/{P}/{hmac} into the static object
// key /retrieve/{MCC}/{P}. Checks, in this order:
//   path is /retrieve/{REGION_PATH}/{5 digits}/{anything}  else 404 (not one of ours)
//   1. hmac = lowercase hex HMAC-SHA256("{MCC}:{P}:{hour}") for the current hour or +-1  else 401
//   2. method is GET                                                                     else 405
//   3. P is 00000, or a UTC day number: after today -> 404, before today - 14 -> 410
//   4. rewrite request.uri, drop the query string, let the request through.
// Generated responses carry cache-control: no-store. See infra/cdn/README.md.
//
// Deployment substitutes both placeholders (render.mjs, or Terraform replace()); left as they
// are, every request fails closed (404, or 401 when only the region path was substituted).
// Each part of the key list must be hex of at least 32 bytes; the key list may hold several
// comma-separated secrets while the apps move from one HMAC_KEY to another.
// The logic is in plain functions taking `now` (ms) so that tests can evaluate this file as is.

var REGION_PATH = '__REGION_PATH__';
var HMAC_KEY_HEX = '__HMAC_KEY_HEX__';

var crypto = require('crypto');

var MS_PER_HOUR = 3600000;
var MS_PER_DAY = 86400000;
var DAYS_SERVED = 14;
var ALL_DAYS = '00000';
var PATH_RE = /^\/retrieve\/([0-9]{3})\/([0-9]{5})\/(.*)$/;
var MAC_RE = /^[0-9a-f]{64}$/;
var KEY_HEX_RE = /^(?:[0-9a-fA-F]{2}){32,}$/;
var REASONS = { 401: 'Unauthorized', 404: 'Not Found', 405: 'Method Not Allowed', 410: 'Gone' };

// "hex[,hex...]" -> array of key Buffers; any invalid part -> no key at all (fail closed).
function decodeKeys(list) {
    var parts = String(list).split(',');
    var keys = [];
    for (var i = 0; i < parts.length; i++) {
        if (!KEY_HEX_RE.test(parts[i])) {
            return [];
        }
        keys.push(Buffer.from(parts[i], 'hex'));
    }
    return keys;
}

// -> { mcc, period, mac } or null when the URI is not /retrieve/{3 digits}/{5 digits}/{...}
function parsePath(uri) {
    var m = PATH_RE.exec(uri);
    return m === null ? null : { mcc: m[1], period: m[2], mac: m[3] };
}

function hourNumber(nowMs) {
    return Math.floor(nowMs / MS_PER_HOUR);
}

function dayNumber(nowMs) {
    return Math.floor(nowMs / MS_PER_DAY);
}

function hmacHex(key, mcc, period, hour) {
    return crypto.createHmac('sha256', key).update(mcc + ':' + period + ':' + hour).digest('hex');
}

// Equal-length strings compared without an early exit.
function constantTimeEqual(a, b) {
    if (a.length !== b.length) {
        return false;
    }
    var diff = 0;
    for (var i = 0; i < a.length; i++) {
        diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
    }
    return diff === 0;
}

// True when `mac` is the HMAC of {mcc}:{period}:{h} under one of `keys` for h in hour-1..hour+1.
// Every candidate is computed and compared, whatever matches first.
function macValid(keys, mcc, period, mac, nowMs) {
    if (!MAC_RE.test(mac)) {
        return false;
    }
    var hour = hourNumber(nowMs);
    var ok = 0;
    for (var k = 0; k < keys.length; k++) {
        for (var d = -1; d <= 1; d++) {
            ok |= constantTimeEqual(hmacHex(keys[k], mcc, period, hour + d), mac) ? 1 : 0;
        }
    }
    return ok === 1;
}

// The whole decision, free of the event and of the clock:
// -> { status: 200, uri } to let the request through to `uri`, or { status: 401|404|405|410 }.
function decide(method, uri, nowMs, regionPath, keys) {
    var p = parsePath(uri);
    if (p === null || p.mcc !== regionPath) {
        return { status: 404 };
    }
    if (!macValid(keys, p.mcc, p.period, p.mac, nowMs)) {
        return { status: 401 };
    }
    if (method !== 'GET') {
        return { status: 405 };
    }
    if (p.period !== ALL_DAYS) {
        var day = parseInt(p.period, 10);
        var today = dayNumber(nowMs);
        if (day > today) {
            return { status: 404 };
        }
        if (day < today - DAYS_SERVED) {
            return { status: 410 };
        }
    }
    return { status: 200, uri: '/retrieve/' + p.mcc + '/' + p.period };
}

function errorResponse(status) {
    var headers = { 'cache-control': { value: 'no-store' } };
    if (status === 405) {
        headers.allow = { value: 'GET' };
    }
    return { statusCode: status, statusDescription: REASONS[status], headers: headers };
}

var KEYS = decodeKeys(HMAC_KEY_HEX);

function handler(event) {
    var request = event.request;
    var outcome = decide(request.method, request.uri, Date.now(), REGION_PATH, KEYS);
    if (outcome.status !== 200) {
        return errorResponse(outcome.status);
    }
    request.uri = outcome.uri;
    request.querystring = {};
    return request;
}
