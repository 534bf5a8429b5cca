// Preloaded by start.sh (node -r): TCP_NODELAY on every socket Node-RED opens. MQTT.js leaves
// Nagle on, so a close_valve PUBLISH written right after a report's PUBACK would wait for the
// broker's delayed ACK (~40 ms) on an idle line. gasgate sets TCP_NODELAY on its own clients;
// the peer gets the same, so the comparison is of the two programs, not of a socket option.
const net = require("net");
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
    this.setNoDelay(true);
    return connect.apply(this, args);
};
