"""--download: fetching official archives with checksums and extracting them safely."""
