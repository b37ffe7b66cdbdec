#!/usr/bin/env python3
"""oauth-feed: new measurements from an OAuth2-protected JSON API, with ductile.plugin.

    poll    refreshes the access token when it is missing or about to expire,
            fetches the measurements newer than the cursor in the state, and
            emits one "measurement.new" event for each.
    health  checks the config and says whether the token is still valid.

The tokens live in the plugin's state. Every refresh saves all token fields
together (access token, refresh token, expiry): a provider that rotates
refresh tokens invalidates the old one the moment it issues a new one.
"""

import json
import urllib.error
import urllib.parse
import urllib.request

from ductile import plugin


def call(request, url, *, form=None, token=None):
    """GET url (or POST form to it) and return the decoded JSON answer."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    # Give up in time to answer before ductile's deadline.
    timeout = max(1.0, min(30.0, request.seconds_left() - 5))
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=timeout) as r:
        return json.load(r)


def refresh(request):
    """Trade the refresh token for new tokens: every token field, to be saved together."""
    current = request.state.get("refresh_token") or request.config_str("initial_refresh_token")
    form = {
        "grant_type": "refresh_token",
        "refresh_token": current,
        "client_id": request.config_str("client_id"),
        "client_secret": request.config_str("client_secret"),
    }
    try:
        tokens = call(request, request.config_str("api_url") + "/oauth/token", form=form)
    except urllib.error.HTTPError as e:
        if e.code in (400, 401):  # invalid_grant: retrying cannot help, a human must re-authorize
            raise plugin.Fail(
                f"the refresh token was refused (HTTP {e.code}): authorize again and set "
                "initial_refresh_token",
                retry=False,
            ) from None
        raise  # anything else (a 503...) fails the job, and it is retried
    plugin.log.info("refreshed the access token")
    return plugin.token_state(
        tokens["access_token"],
        refresh_token=tokens.get("refresh_token") or current,  # not every provider rotates it
        expires_in=tokens.get("expires_in"),
    )


def poll(request):
    tokens = refresh(request) if plugin.tokens_expired(request.state) else {}
    cursor = request.state.get("cursor", 0)
    url = f"{request.config_str('api_url')}/measurements?since={cursor}"
    try:
        try:
            page = call(request, url, token=(tokens or request.state)["access_token"])
        except urllib.error.HTTPError as e:
            if e.code != 401 or tokens:
                raise
            tokens = refresh(request)  # revoked before its expiry: refresh once and try again
            page = call(request, url, token=tokens["access_token"])
    except Exception as e:
        if not tokens:
            raise  # an error answer: retried with backoff
        # An error answer saves no state, so the new tokens would be lost - and with them
        # a rotated refresh token, for good. Save them; the next poll fetches.
        plugin.log.error(f"fetching failed after a token refresh (tokens saved): {type(e).__name__}: {e}")
        return plugin.ok(state_updates=tokens)
    measurements = page["measurements"]
    events = [
        plugin.event("measurement.new", m, dedupe_key=f"measurement-{m['id']}") for m in measurements
    ]
    plugin.log.info(f"{len(events)} new measurement(s)")
    cursor = max([cursor] + [m["id"] for m in measurements])
    return plugin.ok(events=events, state_updates={**tokens, "cursor": cursor})


def health(request):
    for key in ("api_url", "client_id", "client_secret"):
        request.config_str(key)
    if plugin.tokens_expired(request.state):
        plugin.log.info("no valid access token: the next poll refreshes it")
    else:
        plugin.log.info(f"access token valid until {request.state['expires_at']}")


plugin.run({"poll": poll, "health": health})
