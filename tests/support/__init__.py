"""What the test modules share: paths, helpers that run the command and read what it wrote, local
fake exchanges and emulators, and independent references. A test module imports from here, never
from another test module, so that each test module stands alone and a helper has one home."""
