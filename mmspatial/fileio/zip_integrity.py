"""Integrity of a zip-format checkpoint: every entry against its CRC-32.

``torch.save`` writes a zip archive (one entry for the pickle, one per tensor
storage, stored uncompressed) and records each entry's CRC-32, but
``torch.load`` does not check them: a changed byte in a tensor's data loads
silently as a wrong weight. :func:`verify_zip_entries` reads every entry once
and compares. Entries whose recorded CRC is 0 are skipped: that is what
``torch.save`` writes when ``torch.utils.serialization.config.save.
compute_crc32`` is off, and such a file cannot be checked.
"""
import mmap
import struct
import zipfile
import zlib

LOCAL_HEADER = struct.Struct('<4s22xHH')  # signature, ..., name and extra lengths
LOCAL_HEADER_MAGIC = b'PK\x03\x04'


class CorruptedEntry(Exception):
    """An entry of the archive whose bytes do not match its CRC-32."""


def _stored_crc(view, info):
    """CRC-32 of an uncompressed entry, computed on the mapped file."""
    header = view[info.header_offset:info.header_offset + LOCAL_HEADER.size]
    if len(header) < LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f'entry {info.filename}: file truncated')
    magic, name_length, extra_length = LOCAL_HEADER.unpack(header)
    if magic != LOCAL_HEADER_MAGIC:
        raise zipfile.BadZipFile(f'entry {info.filename}: bad local header')
    start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
    if start + info.compress_size > len(view):
        raise zipfile.BadZipFile(f'entry {info.filename}: file truncated')
    return zlib.crc32(view[start:start + info.compress_size])


def _streamed_crc_matches(archive, info):
    """Read a compressed entry through ``zipfile``, which checks its CRC."""
    try:
        with archive.open(info) as entry:
            while entry.read(16 << 20):
                pass
    except zipfile.BadZipFile as error:
        if 'CRC' in str(error):
            return False
        raise
    return True


def verify_zip_entries(path):
    """Check every entry of the zip archive at ``path`` against its CRC-32.

    Returns:
        list[str]: the entries that record no CRC and so were not checked.

    Raises:
        CorruptedEntry: an entry's bytes do not match its CRC-32 (the message
            is the entry's name).
        zipfile.BadZipFile: the archive's headers are damaged or cut short.
    """
    unchecked = []
    with zipfile.ZipFile(path) as archive, open(path, 'rb') as file, \
            mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size > 0:
                    unchecked.append(info.filename)
                elif info.compress_type == zipfile.ZIP_STORED:
                    if _stored_crc(view, info) != info.CRC:
                        raise CorruptedEntry(info.filename)
                elif not _streamed_crc_matches(archive, info):
                    raise CorruptedEntry(info.filename)
        finally:
            view.release()
    return unchecked
