"""Head microcontroller on a serial link: protocol, adapter, source (docs/mcu-protocol.md)."""
