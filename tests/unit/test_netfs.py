"""The SQLite journal is refused on a network or FUSE filesystem, judged from the mount table."""

from pathlib import Path

import pytest

from vaultdrop.errors import ConfigError
from vaultdrop.netfs import filesystem_type, is_network, refuse_network_state_dir

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /srv/shared rw,relatime shared:20 - nfs4 filer:/export rw,vers=4.2
41 40 8:2 / /srv/shared/local rw,relatime shared:21 - xfs /dev/sdb1 rw
42 22 0:36 / /mnt/my\\040videos rw,relatime shared:22 - cifs //nas/videos rw
43 22 0:37 / /mnt/sshfs rw,nosuid shared:23 - fuse.sshfs me@host:/ rw
"""


@pytest.mark.parametrize(("path", "kind"), [
    ("/var/lib/vaultdrop", "ext4"),
    ("/srv/shared/state", "nfs4"),
    ("/srv/shared/local/state", "xfs"),  # a local disk mounted inside the NFS mount
    ("/srv/sharedother", "ext4"),  # a prefix of the name, not of the path
    ("/mnt/my videos/state", "cifs"),
    ("/mnt/sshfs", "fuse.sshfs"),
])
def test_the_mount_holding_a_path_decides(path: str, kind: str) -> None:
    assert filesystem_type(Path(path), MOUNTINFO) == kind


@pytest.mark.parametrize("state_dir", ["/srv/shared/state", "/mnt/my videos/vaultdrop", "/mnt/sshfs/state"])
def test_sqlite_state_dir_on_a_network_filesystem_is_refused(state_dir: str) -> None:
    with pytest.raises(ConfigError, match=r"needs a local disk.*\[journal\] url = \"postgresql://"):
        refuse_network_state_dir(Path(state_dir), MOUNTINFO)


def test_local_state_dir_is_accepted(tmp_path: Path) -> None:
    """Accepted because its mount was found and is local, not because none was found."""
    not_made_yet = tmp_path / "not" / "made" / "yet"
    assert filesystem_type(not_made_yet, MOUNTINFO) == "ext4"  # judged where it will be: the root mount
    refuse_network_state_dir(not_made_yet, MOUNTINFO)
    kind = filesystem_type(tmp_path)  # this machine's own mount table: tmp is local
    assert kind is not None and not is_network(kind), kind
    refuse_network_state_dir(tmp_path)
