// The control room's map: every site with coordinates as a dot in its state's colour. Sites in
// an emergency stand alone, always visible; the rest cluster, and a cluster takes the colour of
// the worst state inside it, so a gateway gone offline is not hidden in a green bubble. With no
// tile server set the background stays blank, with the districts' names: no internet needed.
(function () {
  "use strict";
  const box = document.getElementById("map");
  if (!box || !window.L) return;
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const STATES = ["emergency", "offline", "maintenance", "none"]; // worst first, as the server ranks
  // maxZoom: the clusters need one, and with no tiles nothing else sets it.
  const map = L.map(box, { attributionControl: false, zoomControl: false, maxZoom: 18 });
  L.control.zoom({ zoomInTitle: data.zoom[0], zoomOutTitle: data.zoom[1] }).addTo(map); // in words
  // The view first: a marker has no element before the map has one.
  map.fitBounds(L.latLngBounds(data.sites.map((s) => [s[0], s[1]])).pad(0.1), { maxZoom: 16 });
  if (data.tiles) L.tileLayer(data.tiles, { maxZoom: 19 }).addTo(map);

  function text(tag, value) {
    const node = document.createElement(tag);
    node.textContent = value;
    return node;
  }

  function popup(site) {
    const [, , rank, incident, name, address] = site;
    const body = document.createElement("div");
    body.append(text("b", name), document.createElement("br"), text("span", address || ""),
      document.createElement("br"), text("span", data.states[rank]));
    if (incident) {
      const link = text("a", data.open);
      link.href = "/incidents/" + incident;
      body.append(document.createElement("br"), link);
    }
    return body;
  }

  function pin(rank) {
    const size = rank === 0 ? 24 : 16; // an emergency stands out
    return L.divIcon({ className: "pin pin-" + STATES[rank], iconSize: [size, size] });
  }

  const lone = L.layerGroup();
  const clusters = L.markerClusterGroup({
    chunkedLoading: true,
    showCoverageOnHover: false,
    maxClusterRadius: 50,
    iconCreateFunction(cluster) {
      const worst = Math.min(...cluster.getAllChildMarkers().map((m) => m.options.rank));
      const count = cluster.getChildCount();
      return L.divIcon({
        html: "<span>" + count + "</span>",
        className: "cluster pin-" + STATES[worst],
        iconSize: [36, 36],
      });
    },
  });
  const markers = [];
  for (const site of data.sites) {
    const marker = L.marker([site[0], site[1]], { icon: pin(site[2]), rank: site[2], title: site[4] });
    marker.bindPopup(() => popup(site));
    if (site[2] === 0) lone.addLayer(marker.setZIndexOffset(1000));
    else markers.push(marker);
  }
  clusters.addLayers(markers);
  map.addLayer(clusters);
  map.addLayer(lone);
  if (!data.tiles) {
    // The districts' names in a pane of their own, under every marker.
    map.createPane("districts").style.zIndex = 350;
    for (const [name, lat, lon] of data.districts) {
      L.marker([lat, lon], {
        icon: L.divIcon({ className: "district", html: "", iconSize: null }),
        interactive: false, keyboard: false, pane: "districts",
      }).addTo(map).getElement().append(text("span", name));
    }
  }
})();
