// The request front's check, run by nginx's njs module in front of Triton in every model-service pod.
//
// Triton 2.51 sizes an HTTP/JSON request's buffer from its *declared* shape before comparing that shape
// with the model's config: [8, 2**40] FP32 makes it throw std::bad_alloc and abort, taking the pod's
// every model down. This handler reads the request body (nginx keeps it in memory: the body buffer is as
// large as the body limit), checks each declared input against the model's config, which it asks the
// pod's own Triton for on loopback (cached by nginx), answers 400 {"error": ...} in Triton's style when
// the request does not fit and otherwise hands it to Triton unchanged.
//
// The rule is serving/limits.py's check_request behind serving/gateway.py's check_body, written again
// here: the cases in tests/request_cases.py drive both, and the messages are the Python ones word for
// word. What JSON itself keeps apart: JSON.parse reads 1.0 as 1 and 1e3 as 1000 where Python's json
// sees floats, and it refuses the NaN/Infinity literals that Python accepts. Triton's own parser
// refuses float shapes (500 "Unable to parse 'shape'") and non-standard literals, so the front never
// lets through what Triton would misread.
//
// Runs on njs 0.7.9 (Debian bookworm's libnginx-mod-http-js, what the tests run) and 0.8.x (the
// nginx:1.28.0 image): only what both have: r.requestBuffer, r.subrequest with responseText,
// r.internalRedirect, r.return; no classes, destructuring, for..of, shared dictionaries or fetch.

// Bytes per element, as serving/limits.py's ELEMENT_BYTES (a test holds the two equal).
var ELEMENT_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": 4};
// The most of a request's id the request log keeps (components/request_front.py: REQUEST_ID_CHARS).
var REQUEST_ID_CHARS = 256;
// The model names TritonModelService accepts: anything else is not served by this pod.
var MODEL_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

// Python's repr() of a JSON value, so that messages read as the Python rule's do.
function repr(value) {
    if (value === null || value === undefined) {
        return "None";
    }
    if (value === true || value === false) {
        return value ? "True" : "False";
    }
    if (typeof value === "string") {
        return "'" + value + "'";
    }
    if (Array.isArray(value)) {
        return "[" + value.map(repr).join(", ") + "]";
    }
    if (typeof value === "object") {
        return "{" + Object.keys(value).map(function (k) { return repr(k) + ": " + repr(value[k]); }).join(", ") + "}";
    }
    return String(value);
}

function pythonTypeName(value) {
    if (value === null) {
        return "NoneType";
    }
    if (Array.isArray(value)) {
        return "list";
    }
    if (typeof value === "number") {
        return Number.isInteger(value) ? "int" : "float";
    }
    return {"string": "str", "boolean": "bool", "object": "dict"}[typeof value];
}

// InvalidInput's message: "VALUE: not valid for FIELD: ALLOWED".
function invalid(field, value, allowed) {
    return {refused: repr(value) + ": not valid for " + field + ": " + allowed};
}

function isObject(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}

// limits_from_config: Triton's model config (JSON) -> {model, maxBatchSize, inputs: [[name, datatype, dims]]}.
function limitsFromConfig(config, maxRequestBytes) {
    var inputs = (config.input || []).filter(function (t) { return !t.optional; }).map(function (t) {
        return [String(t.name), String(t.data_type).replace(/^TYPE_/, ""), (t.dims || []).map(Number)];
    });
    return {model: String(config.name), maxBatchSize: Number(config.max_batch_size || 0), maxRequestBytes: maxRequestBytes, inputs: inputs};
}

// declared_tensors: [[name, datatype, shape]] in request order.
function declaredTensors(header) {
    var inputs = header.inputs;
    if (!Array.isArray(inputs) || !inputs.every(isObject)) {
        throw invalid("inputs", inputs, "a list of {name, datatype, shape} objects");
    }
    var declared = [];
    var seen = {};
    for (var i = 0; i < inputs.length; i++) {
        var name = inputs[i].name;
        var datatype = inputs[i].datatype;
        var shape = inputs[i].shape;
        if (typeof name !== "string" || typeof datatype !== "string" || seen[name] === true) {
            throw invalid("inputs", inputs.map(function (t) { return t.name; }), "unique input names and datatypes");
        }
        seen[name] = true;
        declared.push([name, datatype, Array.isArray(shape) ? shape : []]);
    }
    return declared;
}

function isDim(d) {
    return typeof d === "number" && Number.isInteger(d) && d >= 0;
}

// check_request: throws {refused} unless every declared tensor fits the model.
function checkRequest(limits, tensors) {
    var declared = {};
    limits.inputs.forEach(function (input) { declared[input[0]] = input; });
    var names = tensors.map(function (t) { return t[0]; });
    var unknown = names.filter(function (n) { return declared[n] === undefined; });
    var missing = Object.keys(declared).filter(function (n) { return names.indexOf(n) < 0; });
    if (unknown.length || missing.length) {
        throw invalid(limits.model + ": inputs", names.slice().sort(), "exactly the inputs " + repr(Object.keys(declared).sort()));
    }
    var batched = limits.maxBatchSize > 0 ? 1 : 0;
    var total = 0;
    for (var i = 0; i < tensors.length; i++) {
        var datatype = tensors[i][1];
        var shape = tensors[i][2];
        var want = declared[tensors[i][0]];
        var field = limits.model + "." + want[0];
        if (datatype !== want[1]) {
            throw invalid(field + ".datatype", datatype, want[1]);
        }
        var expected = (batched ? ["1.." + limits.maxBatchSize] : []).concat(
            want[2].map(function (d) { return d === -1 ? "any" : String(d); }));
        var allowed = "shape [" + expected.join(", ") + "]";
        if (!shape.every(isDim) || shape.length !== want[2].length + batched) {
            throw invalid(field + ".shape", shape, allowed);
        }
        if (batched && !(1 <= shape[0] && shape[0] <= limits.maxBatchSize)) {
            throw invalid(field + ".shape", shape, allowed);
        }
        for (var j = 0; j < want[2].length; j++) {
            if (want[2][j] !== -1 && want[2][j] !== shape[j + batched]) {
                throw invalid(field + ".shape", shape, allowed);
            }
        }
        // Doubles: exact below 2**53, and any product past that is far over the limit anyway.
        total += shape.reduce(function (a, b) { return a * b; }, 1) * (ELEMENT_BYTES[datatype] || 8);
        if (total > limits.maxRequestBytes) {
            throw invalid(field + ".shape", shape, allowed + " with at most " + limits.maxRequestBytes + " bytes of tensor data per request");
        }
    }
    return total;
}

// The request's JSON: the body, or its first Inference-Header-Content-Length bytes before binary tensors.
function requestHeader(body, headerLength) {
    var text = body;
    if (headerLength !== undefined) {
        if (!/^[0-9]+$/.test(headerLength) || Number(headerLength) > body.length) {
            throw invalid("Inference-Header-Content-Length", headerLength, "0.." + body.length);
        }
        text = body.slice(0, Number(headerLength));
    }
    var header;
    try {
        header = JSON.parse(text.toString());
    } catch (e) {
        throw invalid("request body", text.length + " bytes", "a JSON inference request header");
    }
    if (!isObject(header)) {
        throw invalid("request body", pythonTypeName(header), "a JSON object");
    }
    return header;
}

function refuse(r, status, message) {
    r.warn("request front: " + message);
    r.headersOut["Content-Type"] = "application/json";
    r.return(status, JSON.stringify({error: message}));
}

async function infer(r) {
    var model = r.variables.model;
    if (r.method !== "POST") {
        r.internalRedirect("@triton");
        return;
    }
    if (!MODEL_NAME.test(model)) {
        refuse(r, 400, "refused before reaching Triton: " + invalid("model", model, "a model this service serves").refused);
        return;
    }
    var reply = await r.subrequest("/_front/model-config/" + model + "/config");
    if (reply.status !== 200) {
        refuse(r, 400, "refused before reaching Triton: model " + repr(model) + " is not served here (its config: HTTP " + reply.status + ")");
        return;
    }
    var limits = limitsFromConfig(JSON.parse(reply.responseText), Number(r.variables.max_request_bytes));
    var body = r.requestBuffer || Buffer.from("");
    try {
        // check_body, in two steps: the request log names the id even of a request refused for its shapes.
        var header = requestHeader(body, r.headersIn["Inference-Header-Content-Length"]);
        // Cut to REQUEST_ID_CHARS: the id is the client's, and Fluent Bit's tail skips a line longer
        // than its buffer (32 KB) whole.
        r.variables.inference_id = typeof header.id === "string" ? header.id.slice(0, REQUEST_ID_CHARS) : "";
        checkRequest(limits, declaredTensors(header));
    } catch (e) {
        if (e.refused === undefined) {
            throw e;
        }
        refuse(r, 400, "refused before reaching Triton: " + e.refused);
        return;
    }
    r.internalRedirect("@triton");
}

// The times log nginx appends to: "<request_time> <upstream_response_time>" per inference request, the
// upstream part "-" when Triton never saw it and "a, b" or "a : b" when nginx tried several.
var TIMES_LOG = "front-times.log";
var TIMES_STATE = "front-times.json";

function frontSeconds(line) {
    var fields = line.split(" ");
    var upstream = fields.slice(1).join(" ").split(/[,:]/).reduce(function (sum, part) {
        var seconds = Number(part.trim());
        return isNaN(seconds) || part.trim() === "" ? sum : sum + seconds;
    }, 0);
    return Math.max(0, Number(fields[0]) - upstream);
}

// Folds the log into the counters and empties it. Synchronous, in the only worker: nginx appends no
// line between the read and the truncation.
function fold(temp) {
    var fs = require("fs");
    var totals = {requests: 0, seconds: 0};
    try {
        totals = JSON.parse(fs.readFileSync(temp + "/" + TIMES_STATE).toString());
    } catch (e) {
        // the first fold: nothing counted yet
    }
    var text = "";
    try {
        text = fs.readFileSync(temp + "/" + TIMES_LOG).toString();
    } catch (e) {
        // no inference request yet
    }
    text.split("\n").forEach(function (line) {
        if (line !== "") {
            totals.requests += 1;
            totals.seconds += frontSeconds(line);
        }
    });
    if (text !== "") {
        fs.writeFileSync(temp + "/" + TIMES_STATE, JSON.stringify(totals));
        fs.writeFileSync(temp + "/" + TIMES_LOG, "");
    }
    return totals;
}

function live(r) {
    fold(r.variables.front_temp);
    r.return(200, '{"live":true}');
}

function metrics(r) {
    var totals = fold(r.variables.front_temp);
    r.headersOut["Content-Type"] = "text/plain; version=0.0.4";
    r.return(200, [
        "# HELP inferstack_front_requests_total Inference requests through the request front.",
        "# TYPE inferstack_front_requests_total counter",
        "inferstack_front_requests_total " + totals.requests,
        "# HELP inferstack_front_seconds_total Time inference requests spent in the request front, Triton's answer time excluded.",
        "# TYPE inferstack_front_seconds_total counter",
        "inferstack_front_seconds_total " + totals.seconds.toFixed(6),
        ""
    ].join("\n"));
}

export default {infer: infer, live: live, metrics: metrics};
