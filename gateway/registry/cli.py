"""``gasgate registry check|import|show``: the gas company's way in to the registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import click

from gateway.errors import GasgateError
from gateway.registry import tables
from gateway.registry.importer import ImportResult, import_dir, save
from gateway.registry.registry import Registry
from gateway.store import Store

__all__ = ["STORE_FILE", "existing_store", "registry"]

STORE_FILE = "gasgate.db"

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_data_dir = click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="GASGATE_DATA_DIR",
    help="The gateway's data directory (its store is gasgate.db there).",
)


@click.group("registry")
def registry() -> None:
    """Sites, kits and devices: check and import the gas company's files, show what is stored."""


@registry.command("check")
@click.argument("directory", type=_DIR)
def check(directory: Path) -> None:
    """Check the registry files in DIRECTORY; print every problem (exit 1 on any error)."""
    result = _read(directory)
    _report(result)
    if not result.ok:
        raise SystemExit(1)


@registry.command("import")
@click.argument("directory", type=_DIR)
@_data_dir
@click.option("--who", help="Who imports (recorded in the history; default: the OS user).")
def import_(directory: Path, data_dir: Path, who: str | None) -> None:
    """Check DIRECTORY and, if it has no errors, replace the stored registry with it."""
    result = _read(directory)
    _report(result)
    if not result.ok:
        click.echo("nothing imported", err=True)
        raise SystemExit(1)
    with (
        _store(data_dir, create=True) as store,
        _stage(f"saving {sum(result.counts.values())} records"),
    ):
        generation = save(store, result, who)
    click.echo(f"imported as generation {generation} into {data_dir / STORE_FILE}")


@registry.command("show")
@_data_dir
@click.option("--site", "site_id", help="Show one site in full.")
def show(data_dir: Path, site_id: str | None) -> None:
    """Show the stored registry: the last import and every site's kit, or one site."""
    with _store(data_dir) as store:
        loaded = Registry.load(store)
        last = tables.history(store, limit=1)
    if site_id is not None:
        _show_site(loaded, site_id)
        return
    if last:
        record = last[0]
        click.echo(
            f"generation {record.generation}, imported {record.imported_at:%Y-%m-%d %H:%M:%S}Z"
            f" by {record.who} from {record.source}"
        )
    click.echo(_counts(loaded.data.counts()))
    for site in loaded.sites():
        status = loaded.kit_status(site.site_id)
        state = "complete" if status is None or status.complete else _missing(status.missing)
        click.echo(f"{site.site_id}\t{site.site_type}\t{site.kit}\t{site.district}\t{state}")


def _show_site(loaded: Registry, site_id: str) -> None:
    site = loaded.site(site_id)
    if site is None:
        click.echo(f"no site {site_id!r} in the registry", err=True)
        raise SystemExit(1)
    status = loaded.kit_status(site_id)
    click.echo(f"{site.site_id}: {site.name} ({site.site_type}), {site.address}, {site.district}")
    if status is not None:
        click.echo(f"kit {site.kit}: {'complete' if status.complete else _missing(status.missing)}")
    for contact in loaded.contacts(site_id):
        click.echo(f"contact {contact.name} {contact.phone} [{contact.lang}] {contact.role}")
    for component in loaded.components(site_id):
        device = f" {component.device_id}" if component.device_id else ""
        links = f" -> {' '.join(component.links)}" if component.links else ""
        click.echo(
            f"component {component.component}{device} {component.model}"
            f" installed {component.installed_on}{links}"
        )
    today = date.today()  # the gateway's local calendar, as on the inspection labels
    for cylinder in loaded.cylinders(site_id):
        overdue = " OVERDUE" if cylinder.next_inspection_due < today else ""
        click.echo(
            f"cylinder {cylinder.cylinder_id} {cylinder.capacity_kg:g} kg"
            f" inspection due {cylinder.next_inspection_due}{overdue}"
        )


def _read(directory: Path) -> ImportResult:
    with _stage(f"checking {directory}"):
        try:
            return import_dir(directory)
        except GasgateError as exc:
            raise click.ClickException(str(exc)) from None


@contextmanager
def _stage(what: str) -> Iterator[None]:
    """A long step says what it does and how long it took (on stderr: stdout stays the result)."""
    click.echo(f"{what}…", err=True)
    started = time.monotonic()
    yield
    click.echo(f"{what}: done in {time.monotonic() - started:.1f} s", err=True)


def _report(result: ImportResult) -> None:
    for problem in result.problems:
        click.echo(str(problem), err=True)
    if result.ok:
        click.echo(f"{result.source}: ok, {len(result.warnings)} warnings")
        click.echo(_counts(result.counts))
        incomplete = Registry(result.data).incomplete_kits()
        click.echo(f"sites with an incomplete kit: {len(incomplete)}")
    else:
        click.echo(
            f"{result.source}: {len(result.errors)} errors, {len(result.warnings)} warnings",
            err=True,
        )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items())


def _missing(missing: tuple[object, ...]) -> str:
    return "missing " + ", ".join(str(m) for m in missing)


def existing_store(data_dir: Path) -> Store:
    """The gateway's store in ``data_dir``, which must exist: only ``gasgate run`` and
    ``gasgate registry import`` create one. A tool run with a wrong (or no) ``--data-dir`` would
    otherwise make an empty store and answer about nothing ("0 of 0 sites protected")."""
    path = data_dir / STORE_FILE
    if not path.is_file():
        raise click.ClickException(
            f"no gateway store at {path.absolute()}: give the gateway's data directory with"
            " --data-dir (or GASGATE_DATA_DIR); only `gasgate run` and `gasgate registry import`"
            " create a store"
        )
    return Store(path)


@contextmanager
def _store(data_dir: Path, *, create: bool = False) -> Iterator[Store]:
    store = Store(data_dir / STORE_FILE) if create else existing_store(data_dir)
    try:
        store.open()
        yield store
    except GasgateError as exc:  # the store cannot be opened or written
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
