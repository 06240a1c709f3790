"""A passwd-file target whose faults tests switch on through a JSON control file.

It is a real passwd-file underneath (values really change and really verify); the control
file injects faults to exercise the engine's failure paths:

    {"set": "reject"}       set raises TargetRejected before changing anything
    {"set": "down"}         set raises TargetUnreachable
    {"set": "slow", "slow_seconds": 2}
    {"set": "bug"}          set raises a RuntimeError (a plugin bug, not a keyturn error)
    {"test": "down"}        test raises TargetUnreachable
    {"refuse_new": true}    set works, but every value set from now on is refused by test
                            (a restore of an older value is not)

Calls are counted in <control>.calls so tests can check, e.g., how many logins failed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from keyturn.domain.errors import TargetRejected, TargetUnreachable
from keyturn.domain.model import Secret
from keyturn.targets.base import Account
from keyturn.targets.passwd_file import PasswdFileConfig, PasswdFileTarget


class FlakyConfig(PasswdFileConfig):
    control: str


def _digest(value: Secret) -> str:
    return hashlib.sha256(value.reveal().encode()).hexdigest()


class FlakyTarget(PasswdFileTarget):
    name = "test-flaky"
    config_model = FlakyConfig
    config: FlakyConfig

    @property
    def _control(self) -> Path:
        return self._path(self.config.control)

    def _modes(self) -> dict[str, object]:
        try:
            data = json.loads(self._control.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _side(self, suffix: str) -> dict[str, object]:
        path = self._control.with_suffix(suffix)
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, suffix: str, data: dict[str, object]) -> None:
        self._control.with_suffix(suffix).write_text(json.dumps(data))

    def _count(self, key: str) -> None:
        calls = self._side(".calls")
        calls[key] = int(calls.get(key, 0)) + 1  # type: ignore[call-overload]
        self._save(".calls", calls)

    def set(self, account: Account, new: Secret, current: Secret | None) -> None:
        self._faults(account, new, current)
        super().set(account, new, current)

    def add(self, account: Account, new: Secret, current: Secret | None) -> None:
        """``dual`` writes the new value with `add`: the same faults as `set` (the step is
        called `set` in the protocol either way)."""
        self._faults(account, new, current)
        super().add(account, new, current)

    def _faults(self, account: Account, new: Secret, current: Secret | None) -> None:
        self._count("set")
        modes = self._modes()
        if modes.get("set") == "reject":
            raise TargetRejected(f"test-flaky: new password for {account.username} rejected")
        if modes.get("set") == "down":
            raise TargetUnreachable("test-flaky: target is down")
        if modes.get("set") == "bug":
            raise RuntimeError("a bug in the plugin")
        if modes.get("set") == "slow":
            time.sleep(float(modes.get("slow_seconds", 2)))  # type: ignore[arg-type]
        if modes.get("refuse_new"):
            refused = self._side(".refused")
            if current is None or _digest(current) not in refused:  # not a restore
                refused[_digest(new)] = True
                self._save(".refused", refused)

    def test(self, account: Account, value: Secret) -> bool:
        self._count("test")
        if self._modes().get("test") == "down":
            raise TargetUnreachable("test-flaky: target is down")
        accepted = super().test(account, value)
        if accepted and _digest(value) in self._side(".refused"):
            self._count("refused")
            return False
        return accepted
