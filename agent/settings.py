"""The configuration model: one frozen dataclass per TOML section.

Each field's metadata carries its help text and, for numbers, its allowed range; the
loader in `agent.config` validates a TOML file against these classes generically, and
the example config is checked against them in the tests. Defaults suit a Raspberry Pi dock.
Modules take the section they need (e.g. `OffloadSettings`), never the whole config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A config field with a default, help text and an optional numeric range."""
    meta: dict[str, Any] = {"help": help}
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if isinstance(default, list | dict):
        captured = default
        return field(default_factory=lambda: type(captured)(captured), metadata=meta)
    return field(default=default, metadata=meta)


def req(help: str) -> Any:
    """A required config field (no default)."""
    return field(metadata={"help": help, "required": True})


@dataclass(frozen=True)
class DockSettings:
    id: str = req("Unique dock identifier; used in MQTT topics and every custody record.")
    timezone: str = opt("Asia/Shanghai", "IANA time zone of the unit (deadlines, reports).")
    state_dir: Path = opt(Path("/var/lib/dock-agent"), "Ledger database, keys, journal.")
    store_dir: Path = opt(Path("/var/lib/dock-agent/evidence"), "Evidence store root.")
    runtime_dir: Path = opt(Path("/run/dock-agent"), "Sockets and mount points.")
    key_file: Path | None = opt(
        None, "Ed25519 signing key for ledger checkpoints (default: <state_dir>/dock.key)."
    )


@dataclass(frozen=True)
class AllowedDevice:
    vid: str = req("USB vendor id, 4 hex digits.")
    pid: str = req("USB product id, 4 hex digits.")
    serial_pattern: str = opt("", "Regular expression the USB serial must match (empty: any).")
    storage_only: bool = opt(False, "Recorder has no serial control port (mass storage only).")


@dataclass(frozen=True)
class DeviceSettings:
    source: Literal["udev", "sim"] = opt("udev", "Where recorders come from: udev or dock-sim.")
    sim_socket: Path = opt(Path("/run/dock-agent/sim.sock"), "dock-sim announcement socket.")
    allow: list[AllowedDevice] = opt([], "Recorders allowed to dock (USB VID:PID [+ serial]).")
    allow_storage_only: bool = opt(False, "Accept storage-only recorders at all.")
    debounce_ms: int = opt(1500, "Ignore remove/add flaps shorter than this.", min=0, max=60000)
    storage_wait_s: float = opt(
        20.0, "How long to wait for storage after unlocking a recorder.", min=1, max=600
    )
    unplug_grace_s: float = opt(
        3.0, "After a recorder's port vanishes, how long to wait for its unplug (which comes"
        " debounce_ms after the removal) before the lost link is a fault instead of an"
        " undocking.", min=0.5, max=600)
    bays: dict[str, str] = opt({}, "USB port path (udev ID_PATH) -> bay label.")


@dataclass(frozen=True)
class RecorderSettings:
    fleet_secret_file: Path = opt(
        Path("/etc/dock-agent/fleet.secret"), "Per-fleet HMAC secret for recorder authentication."
    )
    baudrate: int = opt(115200, "Serial baud rate (ignored by CDC-ACM).", min=1200, max=4000000)
    command_timeout_s: float = opt(2.0, "Default per-command reply timeout.", min=0.05, max=60)
    retries: int = opt(2, "Retries for idempotent commands.", min=0, max=10)
    officer_in_name: str = opt(
        r"^[A-Za-z0-9]+_(?P<officer>[A-Za-z0-9]{1,7})_[0-9]{8}_[0-9]{6}_[0-9]+\.[A-Za-z0-9]+$",
        "Regular expression over a footage file's base name whose group `officer` is the"
        " officer number the recorder stamped into it; that number is preferred over the"
        " officer record read at docking (empty: names carry no officer).",
    )
    battery_poll_s: float = opt(
        45.0, "Read a docked recorder's battery this often (charge rate, CHARGING ETA).",
        min=1, max=3600)


@dataclass(frozen=True)
class ClockSettings:
    tolerance_ms: int = opt(1000, "Set the recorder clock when |drift| exceeds this.", min=1,
                            max=3600000)
    require_dock_sync: bool = opt(
        True, "Never set recorder clocks unless the dock clock is NTP-synchronised."
    )
    assume_synchronised: bool | None = opt(
        None, "Simulator/testing only: override the kernel's sync state."
    )


@dataclass(frozen=True)
class MountSettings:
    method: Literal["helper", "directory"] = opt(
        "helper", "helper: privileged dock-mount helper; directory: storage is a directory (sim)."
    )
    helper_socket: Path = opt(
        Path("/run/dock-agent-mount/mount.sock"), "Socket of the privileged mount helper."
    )


@dataclass(frozen=True)
class OffloadSettings:
    footage_dirs: list[str] = opt(["DCIM"], "Directories on the recorder that hold footage.")
    max_concurrent: int = opt(4, "Recorders offloading at once.", min=1, max=64)
    buffer_mib: int = opt(4, "Size of each copy buffer.", min=1, max=64)
    buffers: int = opt(5, "Copy buffers per offload (pipeline depth: one read and hashed, up to "
                       "three written at once, the rest queued).", min=2, max=32)
    fdatasync_every_mib: int = opt(128, "Flush dirty pages every N MiB copied.", min=8, max=4096)
    fdatasync_interval_s: float = opt(
        2.0, "Also make the copy durable every N seconds (a pulled recorder resumes there).",
        min=0.1, max=600)
    reserve_mib: int = opt(1024, "Free space always kept on the evidence disk.", min=0)
    verify: Literal["always", "first-docking", "sampled", "off"] = opt(
        "first-docking", "Re-read stored files from disk after commit."
    )
    verify_sample_rate: float = opt(0.1, "Fraction of files verified with verify=sampled.",
                                    min=0.0, max=1.0)
    wipe_after_offload: bool = opt(
        False, "Delete recorder copies once stored, recorded and verified by read-back."
    )
    read_retries: int = opt(3, "Retries of a failing source read before the file fails.",
                            min=0, max=20)
    direct_io: bool = opt(
        True, "Write stored copies with O_DIRECT where the filesystem allows (several writes "
        "in flight), and read recorder files with O_DIRECT where their storage allows: less "
        "CPU per GiB and no page cache filled with footage read once; buffered where refused."
    )


@dataclass(frozen=True)
class DeadlineSettings:
    hours: float | None = opt(24.0, "Store footage within N hours (regulation 000 §13).",
                              min=1, max=8760)
    working_days: int | None = opt(
        None, "Or: within N working days (regulation 004 §13); set hours to none.", min=1, max=60
    )
    holiday_file: Path | None = opt(None, "File of YYYY-MM-DD holidays, one per line.")
    workday_file: Path | None = opt(None, "File of YYYY-MM-DD weekend days that are worked.")


@dataclass(frozen=True)
class ReadinessSettings:
    min_battery_percent: int = opt(90, "Battery needed for READY.", min=0, max=100)
    min_free_gb: float | None = opt(8.0, "Free recorder storage needed, in GB.", min=0)
    min_free_hours: float | None = opt(None, "Or: free storage in hours of recording.", min=0)
    bitrate_mbps: float = opt(8.0, "Recording bitrate for min_free_hours.", min=0.1, max=1000)
    allowed_firmware: list[str] = opt([], "Firmware versions allowed (empty: any); dotted"
                                      " decimals like \"1.4.2\".")
    firmware_allowlist: dict[str, list[str]] = opt(
        {}, "Per recorder model: the firmware versions allowed (models not listed: see"
        " allowed_firmware)."
    )
    require_officer: bool = opt(True, "A recorder must have an officer assigned.")


@dataclass(frozen=True)
class MqttSettings:
    enabled: bool = opt(True, "Report to the central service over MQTT.")
    host: str = opt("localhost", "Broker host name.")
    port: int = opt(8883, "Broker port.", min=1, max=65535)
    protocol: Literal["5", "3.1.1"] = opt("5", "MQTT protocol version.")
    tls: bool = opt(True, "Use TLS.")
    ca_file: Path | None = opt(None, "CA certificate that signed the broker's certificate.")
    cert_file: Path | None = opt(None, "This dock's client certificate.")
    key_file: Path | None = opt(None, "This dock's client key.")
    username: str | None = opt(None, "Optional user name.")
    password_file: Path | None = opt(None, "File holding the password (kept out of the config).")
    client_id: str | None = opt(None, "MQTT client id (default: dock id).")
    topic_prefix: str = opt("dock/v1", "Versioned topic prefix.")
    keepalive_s: int = opt(30, "MQTT keepalive.", min=5, max=3600)
    backoff_min_s: float = opt(1.0, "First reconnect delay.", min=0.1, max=600)
    backoff_max_s: float = opt(120.0, "Longest reconnect delay.", min=1, max=3600)
    outbox_max_events: int = opt(1_000_000, "Outbox bound; only health samples are dropped.",
                                 min=1000)
    outbox_max_age_days: float = opt(30.0, "Drop health samples older than this.", min=1)
    outbox_history_days: float = opt(
        30.0, "Keep acknowledged events this long to answer the central side's resend"
        " requests (gap repair).", min=1)
    progress_interval_s: float = opt(1.0, "Minimum interval of offload progress messages.",
                                     min=0.1, max=60)


@dataclass(frozen=True)
class HealthSettings:
    interval_s: float = opt(60.0, "Health sample period.", min=1, max=3600)
    store_free_warn_percent: float = opt(10.0, "Fault when evidence disk free space is below.",
                                         min=0, max=100)
    cpu_temp_warn_c: float = opt(80.0, "Fault when CPU temperature is above.", min=20, max=120)


@dataclass(frozen=True)
class ControlSettings:
    socket: Path | None = opt(None, "dockctl socket (default: <runtime_dir>/control.sock).")
    metrics_port: int | None = opt(None, "Prometheus metrics on 127.0.0.1:PORT (off if unset).",
                                   min=1, max=65535)


@dataclass(frozen=True)
class UploadSettings:
    enabled: bool = opt(False, "Upload stored footage to an S3-compatible object store.")
    endpoint: str = opt("", "Store URL, http(s)://host[:port]; path-style addressing is used.")
    region: str = opt("us-east-1", "SigV4 signing region (Ceph RGW: the zonegroup, 'default').")
    bucket: str = opt("", "Bucket that receives the footage.")
    prefix: str = opt("", "Key prefix inside the bucket (e.g. the unit or dock id).")
    credentials_file: Path = opt(
        Path("/etc/dock-agent/s3.credentials"),
        "File with access_key = ... and secret_key = ... lines; must not be group/other readable.",
    )
    ca_file: Path | None = opt(None, "CA certificate that signed the store's TLS certificate.")
    timeout_s: float = opt(30.0, "Socket timeout of every store request.", min=1, max=600)
    part_mib: int = opt(8, "Multipart part size; smaller files go in one PUT.", min=5, max=512)
    bandwidth_mib_s: float = opt(0.0, "Upload rate limit in MiB/s (0: unlimited).", min=0)
    while_offloading_mib_s: float = opt(
        2.0, "Upload rate while recorders are offloading (0: pause uploads).", min=0
    )
    object_lock: Literal["auto", "off"] = opt(
        "auto", "auto: set retention on each object when the bucket has Object Lock."
    )
    object_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = opt(
        "COMPLIANCE", "Object Lock mode for uploaded footage."
    )
    backoff_min_s: float = opt(5.0, "First retry delay after a failed upload.", min=0.1, max=3600)
    backoff_max_s: float = opt(600.0, "Longest retry delay.", min=1, max=86400)
    poll_s: float = opt(10.0, "How often the queue is checked for new files.", min=0.1, max=3600)


@dataclass(frozen=True)
class RetentionSettings:
    purge: bool = opt(False, "Purge uploaded, acknowledged footage from the dock under policy.")
    min_days_on_dock: float = opt(7.0, "Never purge a file earlier (days after offload).", min=0)
    purge_after_days: float = opt(
        30.0, "Purge acknowledged files this old even without disk pressure.", min=0
    )
    retention_days: int = opt(
        365, "Central retention: Object Lock period after the recording date.", min=1, max=36500
    )
    pressure_free_percent: float = opt(
        15.0, "Disk pressure below this free space: purge eligible files oldest first.",
        min=0, max=100,
    )
    target_free_percent: float = opt(
        25.0, "Under pressure, purge until this much space is free.", min=0, max=100
    )
    require_central_ack: bool = opt(
        False, "Also require an ack-upload command from the central service before purge."
    )
    check_interval_s: float = opt(300.0, "How often retention is evaluated.", min=0.1,
                                  max=86400)


@dataclass(frozen=True)
class AccessSettings:
    approvers: dict[str, list[str]] = opt(
        {}, "Unit number -> people who may approve views and exports of that unit's footage"
        ' ("*": every unit). A unit with nobody listed: every access is refused.'
    )
    export_max_mib_per_s: float = opt(
        0.0, "Read rate limit of exports, so offloads keep the disk (0: unlimited).", min=0
    )


@dataclass(frozen=True)
class ScreenSettings:
    listen: str = opt("127.0.0.1", "dock-screen address (loopback: the dock's own display only).")
    port: int = opt(8470, "dock-screen HTTP port.", min=1, max=65535)
    token_file: Path | None = opt(
        None, "File holding the access token; required when `listen` is not loopback."
    )
    language: Literal["auto", "en", "zh_CN"] = opt(
        "auto", "Screen language; auto follows the browser's Accept-Language."
    )
    poll_interval_s: float = opt(0.25, "How often the screen reads the agent's state.",
                                 min=0.05, max=5)
    lights: bool = opt(False, "Drive one light per bay over GPIO (gpiozero, Raspberry Pi).")
    light_pins: dict[str, int] = opt(
        {}, "Bay label -> GPIO (BCM) pin of that bay's light, e.g. { \"1\" = 17 }."
    )


@dataclass(frozen=True)
class AuditSettings:
    enabled: bool = opt(True, "Re-hash stored files against the ledger on a schedule.")
    cycle_days: float = opt(30.0, "Re-hash the whole store once every N days.", min=0.001,
                            max=3650)
    interval_s: float = opt(3600.0, "Seconds between audit slices.", min=1, max=86400)
    max_mib_per_s: float = opt(16.0, "Read rate limit of the audit (offloads come first).",
                               min=0.1, max=10000)


@dataclass(frozen=True)
class FirmwareSettings:
    trusted_keys: list[Path] = opt(
        [], "Ed25519 public keys (PEM) whose signed firmware packages this dock accepts"
        " (empty: no package is accepted).")
    targets: dict[str, str] = opt(
        {}, "Recorder model -> the firmware version it should run (e.g. { \"BWC-4\" ="
        " \"2.1.0\" }); below it a staged package updates it when policy allows. The"
        " central service may override a model (set-firmware-policy). Acceptable versions:"
        " [readiness] firmware_allowlist.")
    auto_update: bool = opt(True, "Update recorders below their target while docked.")
    min_battery_percent: int = opt(
        40, "Never start an update with the recorder's battery below this.", min=0, max=100)
    shift_start_windows: list[str] = opt(
        [], "Local times \"HH:MM-HH:MM\" (dock time zone) in which no update starts, so"
        " recorders are never rebooting when a shift picks them up.")
    import_dirs: list[Path] = opt(
        [], "Directories (the dock's share or USB mount) the central service may stage"
        " packages from by file name (stage-firmware).")
    chunk_timeout_s: float = opt(
        10.0, "Reply timeout of one firmware chunk (the recorder writes it to flash).",
        min=0.5, max=600)
    max_attempts: int = opt(
        3, "Failed attempts of one package on one recorder before the dock stops trying it"
        " (a package that rolled back is never tried again on that recorder).", min=1,
        max=100)


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = opt("info", "Log level.")
    format: Literal["json", "text"] = opt("json", "JSON lines for journald, or text.")


@dataclass(frozen=True)
class Settings:
    dock: DockSettings
    devices: DeviceSettings = field(default_factory=DeviceSettings)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    clock: ClockSettings = field(default_factory=ClockSettings)
    mount: MountSettings = field(default_factory=MountSettings)
    offload: OffloadSettings = field(default_factory=OffloadSettings)
    deadline: DeadlineSettings = field(default_factory=DeadlineSettings)
    readiness: ReadinessSettings = field(default_factory=ReadinessSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    upload: UploadSettings = field(default_factory=UploadSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    screen: ScreenSettings = field(default_factory=ScreenSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    firmware: FirmwareSettings = field(default_factory=FirmwareSettings)

    @property
    def key_file(self) -> Path:
        return self.dock.key_file or self.dock.state_dir / "dock.key"

    @property
    def db_path(self) -> Path:
        return self.dock.state_dir / "dock.sqlite3"

    @property
    def control_socket(self) -> Path:
        return self.control.socket or self.dock.runtime_dir / "control.sock"
