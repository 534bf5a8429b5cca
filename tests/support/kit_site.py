"""A small hand-written registry for linkage and end-to-end tests: one restaurant whose leak
detector closes two valves, and whose smart regulator closes a third; all MQTT-native."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DETECTOR", "REGULATOR", "REGULATOR_VALVE", "SITE", "VALVES", "write_registry"]

SITE = "rest-e2e"
DETECTOR = "det-a"
VALVES = ("valve-a1", "valve-a2")
REGULATOR = "reg-a"
REGULATOR_VALVE = "valve-r"


def write_registry(directory: Path, interval_s: int = 60) -> Path:
    """sites.csv + components.csv in ``directory``; every device reports every ``interval_s``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sites.csv").write_text(
        "site_id,name,site_type,kit,district,address,contact_name,contact_phone,contact_lang\n"
        f"{SITE},Golden Wok,restaurant,four_piece,Futian,12 Shennan Rd,Li Wei,13800138000,zh\n",
        encoding="utf-8",
    )
    rows = [
        f"{SITE},leak_detector,{DETECTOR},KD-210C,2025-03-01,,{interval_s}",
        *(f"{SITE},shutoff_valve,{v},SV-25E,2025-03-01,{DETECTOR},{interval_s}" for v in VALVES),
        f"{SITE},shutoff_valve,{REGULATOR_VALVE},SV-25E,2025-03-01,,{interval_s}",
        f"{SITE},smart_regulator,{REGULATOR},RG-28S,2025-03-01,{REGULATOR_VALVE},{interval_s}",
        f"{SITE},metal_hose,,MH-1500,2025-03-01,,",
    ]
    (directory / "components.csv").write_text(
        "site_id,component,device_id,model,installed_on,links,report_interval_s\n"
        + "\n".join(rows)
        + "\n",
        encoding="utf-8",
    )
    return directory
