"""Who a deployment profile reaches in the emulated tenant, and which profile a device ends up with.

A device is in a dynamic group when its group tag matches the group's rule (rollout.py) and in a static group
when its Entra object is a member (directory.py). A profile assigned to a group *targets* the devices in it
(``Store.target``: ``pending``, then ``assignedInSync`` after the status delay), whichever happens first:
the assignment or the device joining. Bookkeeping over the tenant's data only: budgets, faults and answers
stay with the callers (operations.py, entra.py).
"""

from __future__ import annotations

from .directory import Directory
from .inventory import PROFILE_FIELD, Inventory
from .rollout import Rollout
from .state import Store


class Reach:
    """Groups, memberships and targeting, over the tenant's own objects (shared, not copied)."""

    def __init__(self, rollout: Rollout, directory: Directory, store: Store, inventory: Inventory | None,
                 properties: dict[str, dict[str, str]], own_profile: str) -> None:
        self.rollout = rollout
        self.directory = directory
        self.store = store
        self.inventory = inventory
        self.properties = properties  # what updateDeviceProperties set, per device
        self.own_profile = own_profile  # the profile the seed call's "device" semantics gives a device

    def tag_of(self, device_id: str) -> str:
        """The device's group tag: what updateDeviceProperties set, else the inventory's, else none."""
        tag = self.properties.get(device_id, {}).get("groupTag")
        if tag is None and isinstance(self.inventory, dict):
            tag = self.inventory.get(device_id, {}).get("groupTag")
        return tag or ""

    def tagged(self, tag: str) -> list[str]:
        """The Autopilot devices carrying ``tag`` (what a dynamic group with its rule contains), in order."""
        devices = self.inventory if self.inventory is not None else list(self.properties)
        return [d for d in devices if self.tag_of(d) == tag]

    def groups_of(self, device_id: str) -> set[str]:
        """The groups the device is in: dynamic ones by its tag, static ones by its Entra object."""
        groups = self.rollout.groups_for_tag(self.tag_of(device_id))
        entra = self.directory.entra_id_of(device_id)
        device = self.directory.by_device_id(entra) if entra is not None else None
        if device is not None:
            groups |= self.directory.groups_of(device.object_id)
        return groups

    def target_group(self, group: str) -> None:
        """A profile now reaches ``group``: every device in it is targeted."""
        if self.directory.is_static(group):
            for member in self.directory.members(group):
                if (device := self.directory.device(member)) is not None:
                    self.store.target(device.autopilot_id)
        elif (tag := self.rollout.groups.get(group)) is not None:
            for device_id in self.tagged(tag):
                self.store.target(device_id)

    def members_joined(self, group: str, object_ids: list[str]) -> None:
        """Objects were added to a static group: if a profile is assigned to it, their devices are targeted.

        Removing a member does not un-target its device: Intune keeps a profile it has applied, and nothing
        in a rehearsal depends on the reverse path, so the emulator does not model it."""
        if self.rollout.profile_for_groups({group}) is None:
            return
        for object_id in object_ids:
            if (device := self.directory.device(object_id)) is not None:
                self.store.target(device.autopilot_id)

    def profile_of(self, device_id: str) -> str | None:
        """The id of the deployment profile the device has: the oldest-created profile assigned to a group it
        is in (by tag or by static membership), else the emulator's once it assigned the device (the
        assignment replaces whatever was there), else the inventory's ``deploymentProfileId``, else None."""
        if (through_group := self.rollout.profile_for_groups(self.groups_of(device_id))):
            return through_group
        if self.store.assigned(device_id):
            return self.own_profile
        if isinstance(self.inventory, dict):
            return self.inventory.get(device_id, {}).get(PROFILE_FIELD)
        return None
