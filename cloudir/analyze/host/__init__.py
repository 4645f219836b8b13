"""Host evidence (disk images, file system exports) read through dissect.target."""
