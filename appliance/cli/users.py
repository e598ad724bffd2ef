"""``pacs-appliance user add|passwd|list|disable|enable|role|token``: the same account code as the web UI.

Passwords come from a prompt (typed twice, not echoed) or ``--password-file``,
never from the command line, where they would end up in the shell history and in
``ps``. Every change is written to the audit log with actor ``cli:<os user>``.
"""
from __future__ import annotations

import getpass
import json

import click

from ..records import accounts
from .common import data_option, friendly_errors, open_appliance


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "cli"


def _password(password_file) -> str:
    if password_file is not None:
        return password_file.read().strip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _apply(data_dir, fn, action: str, detail: str):
    """Run ``fn(accounts repository)`` on the index writer, then audit it."""
    with open_appliance(data_dir) as app:
        result = app.index.writer.run(lambda: fn(app.index.accounts))
        app.audit.record(action, _actor(), detail=detail)
        app.audit.flush()
        return result


password_file_option = click.option(
    "--password-file", type=click.File("r"), default=None,
    help="Read the password from this file (default: prompt for it).")


@click.group()
def user() -> None:
    """Web users: add, change passwords, list, disable, API tokens."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(accounts.ROLES), default="clinician", show_default=True)
@password_file_option
@data_option
@friendly_errors
def user_add(username, role, password_file, data_dir):
    """Create a user who can log in to the web UI."""
    password = _password(password_file)
    _apply(data_dir, lambda repo: accounts.create_user(repo, username, password, role), "user.create",
           f"{username}: {role}")
    click.echo(f"created {username} ({role})")


@user.command("passwd")
@click.argument("username")
@password_file_option
@data_option
@friendly_errors
def user_passwd(username, password_file, data_dir):
    """Set a new password (ends the user's sessions and API tokens)."""
    password = _password(password_file)
    _apply(data_dir, lambda repo: accounts.set_password(repo, username, password), "user.password", username)
    click.echo(f"new password set for {username}; their sessions and API tokens were ended")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_option
@friendly_errors
def user_list(as_json, data_dir):
    """List users with their role and whether they are disabled."""
    with open_appliance(data_dir) as app:
        users = [{"username": u.username, "role": u.role, "disabled": u.disabled,
                  "created_at": u.created_at.isoformat(timespec="seconds")}
                 for u in accounts.list_users(app.index.accounts)]
    if as_json:
        click.echo(json.dumps(users, indent=2))
        return
    for u in users:
        click.echo(f"{u['username']:<24} {u['role']:<13} {'disabled' if u['disabled'] else 'active':<9} "
                   f"since {u['created_at'][:10]}")


@user.command("disable")
@click.argument("username")
@data_option
@friendly_errors
def user_disable(username, data_dir):
    """Stop a user from logging in (ends their sessions and API tokens)."""
    _apply(data_dir, lambda repo: accounts.set_disabled(repo, username, True), "user.disable", username)
    click.echo(f"disabled {username}")


@user.command("enable")
@click.argument("username")
@data_option
@friendly_errors
def user_enable(username, data_dir):
    """Let a disabled user log in again."""
    _apply(data_dir, lambda repo: accounts.set_disabled(repo, username, False), "user.enable", username)
    click.echo(f"enabled {username}")


@user.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(accounts.ROLES))
@data_option
@friendly_errors
def user_role(username, role, data_dir):
    """Change a user's role."""
    _apply(data_dir, lambda repo: accounts.set_role(repo, username, role), "user.role", f"{username}: {role}")
    click.echo(f"{username} is now {role}")


@user.command("token")
@click.argument("username")
@click.option("--name", default="", help="What the token is for (shown in the web UI).")
@data_option
@friendly_errors
def user_token(username, name, data_dir):
    """Create an API token (for 'Authorization: Bearer ...'); it is printed once and stored only hashed."""
    token, _row = _apply(data_dir, lambda repo: accounts.create_api_token(repo, username, name), "token.create",
                         f"{username}: {name}")
    click.echo(token)


@user.command("tokens")
@click.argument("username")
@data_option
@friendly_errors
def user_tokens(username, data_dir):
    """List a user's active API tokens (id, start of the token, name)."""
    with open_appliance(data_dir) as app:
        owner = accounts.get_user(app.index.accounts, username)
        rows = app.index.accounts.active_tokens(owner.id)
    for t in rows:
        click.echo(f"{t.id:<6} {t.prefix}…  {t.name}  (created {t.created_at:%Y-%m-%d})")


@user.command("revoke-token")
@click.argument("token_id", type=int)
@data_option
@friendly_errors
def user_revoke_token(token_id, data_dir):
    """Revoke an API token by its id (see `user tokens`)."""
    _apply(data_dir, lambda repo: accounts.revoke_api_token(repo, token_id), "token.revoke", f"token {token_id}")
    click.echo(f"revoked token {token_id}")
