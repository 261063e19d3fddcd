"""OpenStack cloud connections from the command line, through clouds.services (docs/openstack.md).

`manage.py cloud --user ADMIN list|show|add|update|check|remove …`: the same rules and audit as the admin
and the API. The secret is never a plain argument (it would land in the shell's history and in `ps`):
`--secret-stdin` reads it from standard input, `--ask-secret` prompts for it without echo, `--secret-from-env
VAR` reads it now from this command's environment; each is then stored encrypted. `--secret-env VAR` instead
stores only the variable's name: the portal's processes read the secret from their own environment.
Errors go to stderr with the exit status of their kind (README.md, "Command line").
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from clouds import selectors, services
from clouds.models import Cloud
from portal.choices import Via
from portal.cli import VerbCommand
from portal.exceptions import ValidationFailed

# option -> service field (every connection field but the name and the secret)
OPTIONS = {
    "description": "description", "auth": "auth_type", "clouds_yaml": "clouds_yaml_name", "auth_url": "auth_url",
    "username": "username", "user_domain": "user_domain_name", "project": "project_name",
    "project_domain": "project_domain_name", "app_cred_id": "application_credential_id", "region": "region_name",
    "glance_url": "image_endpoint", "neutron_url": "network_endpoint", "ca_file": "ca_file",
    "secret_env": "secret_env",
}


def _connection_options(parser: CommandParser) -> None:
    parser.add_argument("--description")
    parser.add_argument("--auth", choices=Cloud.Auth.values,
                        help="password (Keystone user), v3applicationcredential, none (no Keystone: give "
                             "--glance-url/--neutron-url), clouds_yaml (an entry of clouds.yaml: --clouds-yaml).")
    parser.add_argument("--clouds-yaml", help="The entry's name in clouds.yaml (OS_CLIENT_CONFIG_FILE or the "
                                              "standard places).")
    parser.add_argument("--auth-url", help="Keystone's URL, e.g. https://keystone.example.org:5000/v3.")
    parser.add_argument("--username")
    parser.add_argument("--user-domain")
    parser.add_argument("--project")
    parser.add_argument("--project-domain")
    parser.add_argument("--app-cred-id", help="The application credential's ID.")
    parser.add_argument("--region")
    parser.add_argument("--glance-url", help="Glance's root URL (without Keystone; else overrides the catalog).")
    parser.add_argument("--neutron-url", help="Neutron's root URL (without Keystone; else overrides the catalog).")
    parser.add_argument("--ca-file", help="A CA bundle (absolute path on this server).")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", dest="verify_tls", action="store_false", default=None,
                     help="Do not verify the cloud's TLS certificate (test clouds only).")
    tls.add_argument("--verify-tls", dest="verify_tls", action="store_true", default=None)
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--secret-stdin", action="store_true",
                        help="Read the password or secret from standard input (first line); stored encrypted.")
    secret.add_argument("--ask-secret", action="store_true", help="Prompt for it (not echoed); stored encrypted.")
    secret.add_argument("--secret-from-env", metavar="VAR",
                        help="Read it now from this command's environment variable VAR; stored encrypted.")
    secret.add_argument("--secret-env", metavar="VAR",
                        help="Store no secret: the portal's processes read it from their environment variable VAR.")


class Command(VerbCommand):
    help = "OpenStack cloud connections (administrators): list, show, add, update, check, remove."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Act as this portal user (an administrator).")
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="Connections with their last check.")
        sub.add_parser("show", help="One connection (never its secret).").add_argument("name")
        add = sub.add_parser("add", help="Connect a cloud.")
        add.add_argument("name")
        _connection_options(add)
        update = sub.add_parser("update", help="Change a connection (options left out stay).")
        update.add_argument("name")
        _connection_options(update)
        update.add_argument("--clear-secret", action="store_true", help="Remove the stored secret.")
        sub.add_parser("check", help="Sign in and list Glance and Neutron; exit status 1 when it fails.") \
            .add_argument("name")
        sub.add_parser("remove", help="Forget a connection (imported images and networks stay).") \
            .add_argument("name")


    def _secret(self, opts: dict) -> str | None:
        if opts.get("secret_stdin"):
            value = sys.stdin.readline().rstrip("\r\n")
        elif opts.get("ask_secret"):
            value = getpass.getpass("Password or secret: ")
        elif opts.get("secret_from_env"):
            value = os.environ.get(opts["secret_from_env"], "")
            if not value:
                raise ValidationFailed(f"The environment variable {opts['secret_from_env']} is not set here.",
                                       field="secret")
        else:
            return None
        if not value:
            raise ValidationFailed("The secret read is empty.", field="secret")
        return value

    def _fields(self, opts: dict) -> dict[str, Any]:
        fields = {field: opts[option] for option, field in OPTIONS.items() if opts.get(option) is not None}
        if opts.get("verify_tls") is not None:
            fields["verify_tls"] = opts["verify_tls"]
        return fields

    def _list(self, actor: Any, opts: dict) -> None:
        clouds = list(selectors.cloud_list(actor=actor))
        if not clouds:
            self.stdout.write("No clouds.")
        for c in clouds:
            state = "not checked" if c.last_check_ok is None else "ok" if c.last_check_ok else "failed"
            self.stdout.write(f"{c.name}\t{c.auth_type}\t{_where(c)}\t{state}")

    def _show(self, actor: Any, opts: dict) -> None:
        c = selectors.cloud_get(actor=actor, key=opts["name"])
        secret = (f"from environment variable {c.secret_env}" if c.secret_env else
                  "stored (encrypted)" if c.secret_encrypted else "none")
        lines = [f"{c.name}: {c.get_auth_type_display()}", f"  where: {_where(c)}"]
        for label, value in (("description", c.description), ("clouds.yaml entry", c.clouds_yaml_name),
                             ("user", c.username), ("user domain", c.user_domain_name if c.username else ""),
                             ("project", c.project_name), ("project domain", c.project_domain_name
                                                           if c.project_name else ""),
                             ("application credential", c.application_credential_id), ("region", c.region_name),
                             ("Glance", c.image_endpoint), ("Neutron", c.network_endpoint), ("CA bundle", c.ca_file)):
            if value:
                lines.append(f"  {label}: {value}")
        lines.append(f"  verify TLS: {'yes' if c.verify_tls else 'no'}")
        lines.append(f"  secret: {secret}")
        if c.last_check_at:
            lines.append(f"  last check: {'ok' if c.last_check_ok else 'failed'} at {c.last_check_at:%Y-%m-%d %H:%M}"
                         f" — {c.last_check_message}")
        self.stdout.write("\n".join(lines))

    def _add(self, actor: Any, opts: dict) -> None:
        cloud = services.cloud_create(actor=actor, via=Via.CLI, name=opts["name"], secret=self._secret(opts) or "",
                                      **self._fields(opts))
        self.stdout.write(f"Connected cloud {cloud.name}; check it with: manage.py cloud --user {actor.username} "
                          f"check {cloud.name}")

    def _update(self, actor: Any, opts: dict) -> None:
        cloud = selectors.cloud_get(actor=actor, key=opts["name"])
        services.cloud_update(actor=actor, via=Via.CLI, cloud=cloud, secret=self._secret(opts),
                              clear_secret=bool(opts.get("clear_secret")), **self._fields(opts))
        self.stdout.write(f"Changed cloud {cloud.name}.")

    def _check(self, actor: Any, opts: dict) -> None:
        cloud = selectors.cloud_get(actor=actor, key=opts["name"])
        result = services.cloud_check(actor=actor, via=Via.CLI, cloud=cloud)
        if not result.ok:
            raise CommandError(f"{cloud.name}: {result.message}", returncode=1)
        self.stdout.write(f"{cloud.name}: {result.message}")

    def _remove(self, actor: Any, opts: dict) -> None:
        cloud = selectors.cloud_get(actor=actor, key=opts["name"])
        services.cloud_delete(actor=actor, via=Via.CLI, cloud=cloud)
        self.stdout.write(f"Removed cloud {opts['name']} (images and networks that came from it stay).")


def _where(c: Cloud) -> str:
    if c.auth_type == Cloud.Auth.CLOUDS_YAML:
        return f"clouds.yaml:{c.clouds_yaml_name}"
    if c.auth_type == Cloud.Auth.NONE:
        return " ".join(u for u in (c.image_endpoint, c.network_endpoint) if u)
    return c.auth_url
