// Node-RED settings of the bench's peer (bench/system.py starts it through start.sh).
//
// The flow (flows.json, in this directory) reads everything that differs between runs from
// the environment, which Node-RED substitutes into node properties when the flow starts:
//
//   NODE_RED_USER_DIR  where Node-RED keeps its runtime files: the run's own directory, so
//                      nothing is written into the project (start.sh links node_modules there)
//   NODE_RED_PORT      editor, admin API and /bench/status, on 127.0.0.1 only
//   MQTT_HOST/PORT     the peer's private Mosquitto
//   VM_URL             the InfluxDB v2 write API (VictoriaMetrics in the bench)
//   VM_ORG/VM_BUCKET   org and bucket of /api/v2/write
//   KIT_LINKS_FILE     JSON {"<detector_id>": ["<valve_id>", ...]}: the registry's links
//   NODE_RED_LOG       log level (warn: the flow must not be slowed by logging)
//
// No adminAuth: everything listens on loopback only, for the length of one bench run.

const path = require("path");
const env = process.env;
for (const name of ["NODE_RED_USER_DIR", "NODE_RED_PORT", "MQTT_HOST", "MQTT_PORT", "VM_URL", "KIT_LINKS_FILE"]) {
    if (!env[name]) throw new Error(`${name} is not set (bench/system.py sets it; see settings.js)`);
}
env.VM_ORG = env.VM_ORG || "gasgate";
env.VM_BUCKET = env.VM_BUCKET || "node-red";

module.exports = {
    userDir: env.NODE_RED_USER_DIR,
    flowFile: path.join(__dirname, "flows.json"),
    credentialSecret: false, // the flow has no secrets: VictoriaMetrics takes no token here

    uiHost: "127.0.0.1",
    uiPort: parseInt(env.NODE_RED_PORT, 10),

    // headless: no update checks, no telemetry, no palette installs
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    editorTheme: { projects: { enabled: false }, tours: false },

    functionExternalModules: false,
    functionTimeout: 0,
    exportGlobalContextKeys: false,
    contextStorage: { default: { module: "memory" } },
    mqttReconnectTime: 1000,

    logging: { console: { level: env.NODE_RED_LOG || "warn", metrics: false, audit: false } },
};
