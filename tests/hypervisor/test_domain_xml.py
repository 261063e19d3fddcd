"""Domain XML is built with ElementTree from typed specs: user text can never inject elements."""

import xml.etree.ElementTree as ET

from portal.hypervisor import DiskSpec, DomainSpec
from portal.hypervisor.domain_xml import build_domain_xml, graphics_endpoint, parse_metadata


def make_spec(**kw):
    base = dict(name="vmp-abc", uuid="11111111-2222-4333-8444-555555555555", vcpus=2, memory_mib=256)
    base.update(kw)
    return DomainSpec(**base)


def test_metacharacters_in_title_and_description_are_escaped_not_parsed():
    xml = build_domain_xml(make_spec(title="</title><devices><disk/>", description="a & b ' \" <x>"))
    root = ET.fromstring(xml)
    assert root.findtext("title") == "</title><devices><disk/>"
    assert root.findtext("description") == "a & b ' \" <x>"
    assert len(root.findall("devices/disk")) == 0


def test_disks_have_an_explicit_format_and_acpi_is_on():
    xml = build_domain_xml(make_spec(disks=(DiskSpec(path="/x/d.qcow2"),), domain_type="qemu"))
    root = ET.fromstring(xml)
    assert root.find("devices/disk/driver").get("type") == "qcow2"
    assert root.find("features/acpi") is not None
    assert root.get("type") == "qemu"


def test_direct_kernel_boot_and_firmware_boot():
    k = ET.fromstring(build_domain_xml(make_spec(kernel="/k", initrd="/i", cmdline="console=ttyS0")))
    assert k.findtext("os/kernel") == "/k" and k.findtext("os/cmdline") == "console=ttyS0"
    f = ET.fromstring(build_domain_xml(make_spec()))
    assert f.find("os/kernel") is None and f.find("os/boot").get("dev") == "hd"


def test_metadata_roundtrip_and_foreign_domains():
    xml = build_domain_xml(make_spec(metadata={"instance": "i1", "vm-id": "7"}))
    assert parse_metadata(xml) == {"instance": "i1", "vm-id": "7"}
    assert parse_metadata("<domain type='kvm'><name>x</name></domain>") is None


def test_graphics_endpoint_from_live_xml():
    live = ("<domain><devices><graphics type='vnc' port='5901' listen='127.0.0.1' passwd='s'/>"
            "</devices></domain>")
    assert graphics_endpoint(live) == ("127.0.0.1", 5901, "s")
    assert graphics_endpoint("<domain><devices><graphics type='vnc' port='-1'/></devices></domain>") is None


def test_cdrom_drives_boot_first_and_an_empty_tray_has_no_source():
    from portal.hypervisor import CdromSpec
    from portal.hypervisor.domain_xml import boot_order, cdrom_xml, parse_cdroms, set_cdrom_media

    xml = build_domain_xml(make_spec(disks=(DiskSpec(path="/x/d.qcow2"),),
                                     cdroms=(CdromSpec(path="/pool/install.iso"),)))
    root = ET.fromstring(xml)
    cd = root.find("devices/disk[@device='cdrom']")
    assert cd.find("target").attrib == {"dev": "hdc", "bus": "ide"}
    assert cd.find("readonly") is not None and cd.find("driver").get("type") == "raw"
    assert boot_order(xml) == ["cdrom", "hd"]
    assert parse_cdroms(xml) == [CdromSpec(path="/pool/install.iso")]

    ejected = set_cdrom_media(xml, CdromSpec(path=None))
    assert parse_cdroms(ejected) == [CdromSpec(path=None)]
    assert parse_cdroms(set_cdrom_media(ejected, CdromSpec(path="/p/b.iso"))) == [CdromSpec(path="/p/b.iso")]
    assert ET.fromstring(cdrom_xml(CdromSpec())).find("source") is None  # the empty tray
    # No drive: the disk only; a direct-kernel domain keeps its kernel even with a drive.
    assert boot_order(build_domain_xml(make_spec())) == ["hd"]
    assert boot_order(build_domain_xml(make_spec(kernel="/k", cdroms=(CdromSpec(),)))) == []
