"""The `csv` provider: Services and their backends listed in a CSV file.

The file starts with a header naming its columns: `service` and `address` (an IP address),
optionally `port` and `zone`; then one row per backend. The rows of one `service` become one
Service. Its port is the `port` option, else the port its rows agree on: rows that disagree
leave the Service as it is in the cluster. A row without a usable address or port is
dropped with a warning (the core drops a bad zone the same way). A file that cannot be read
is a configuration error: the run stops before anything is written.
"""

import csv

from syncer.plugin import (
    Backend,
    ConfigPath,
    Discovery,
    PortNumber,
    Provider,
    ProviderOptions,
    ServicePort,
    canonical_ip,
    group_services,
)


class CsvOptions(ProviderOptions):
    path: ConfigPath
    """The CSV file: a header with `service,address[,port][,zone]`, then a row per backend."""
    port: PortNumber | None = None
    """The Service port. Unset: each Service listens on the port its rows agree on."""


class CsvProvider(Provider[CsvOptions]):
    Options = CsvOptions
    summary = "Backends listed in a CSV file (service,address,port,zone)"

    def check(self) -> None:
        self.discover()  # it only reads a local file

    def discover(self) -> Discovery:
        try:
            with self.options.path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, restval="", skipinitialspace=True)
                rows = [(reader.line_num, row) for row in reader]
            if not {"service", "address"} <= set(reader.fieldnames or ()):
                raise ValueError("the header must name the columns service and address")
        except (OSError, ValueError, csv.Error) as e:  # UnicodeDecodeError is a ValueError
            raise self.context.config_error("path", f"unusable CSV file: {e}") from None
        members = []
        for line, row in rows:
            address, port, zone = canonical_ip(row["address"]), row.get("port"), row.get("zone")
            if address is None or (port and not (port.isdecimal() and 0 < int(port) < 2**16)):
                self.context.log.warning("line %d dropped: no IP address or a bad port", line)
                continue
            ports = {"": int(port)} if port else {}
            members.append((row["service"], Backend(address, ports, zone=zone or None)))
        service_ports = None if self.options.port is None else [ServicePort("", self.options.port)]
        return group_services(members, ports=service_ports, log=self.context.log)
