"""Virtual machines: domain XML, libvirt, the accelerator, and the guest agent protocol."""
