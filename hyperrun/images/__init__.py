"""Images: the store of images and blobs, loading, validation, layers, base disks."""
