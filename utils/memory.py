"""How much memory a run may take: checked before work that would otherwise exhaust it."""
import os


def available_bytes():
    """The memory this machine can give a new allocation now: Linux's MemAvailable, else the
    physical memory; None if neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def shortfall(nbytes):
    """None if `nbytes` fit in the available memory, else a phrase saying how much is missing."""
    available = available_bytes()
    if available is None or nbytes <= available:
        return None
    return f"needs about {gib(nbytes)} of memory, {gib(available)} available"


def gib(nbytes):
    return f"{nbytes / 2 ** 30:.1f} GiB"
