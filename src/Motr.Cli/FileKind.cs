using System.Runtime.InteropServices;

namespace Motr.Cli;

/// <summary>
/// What kind of file a path names, which .NET does not say (a device node or a FIFO is a plain "file" to it): Linux's
/// statx, whose buffer has one layout on every architecture.
/// </summary>
internal static class FileKind
{
    [DllImport("libc", SetLastError = true)]
    private static extern int statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buffer);

    private const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
    private const uint StatxType = 0x1;
    private const int StatxSize = 256, ModeOffset = 28; // struct statx: stx_mode (__u16) at byte 28

    /// <summary>
    /// Null if <paramref name="path"/> is a regular file (or the kind cannot be learnt: off Linux, or statx failed);
    /// otherwise what it is instead, in words ("a character device", "a FIFO", ...). A symbolic link is not followed.
    /// </summary>
    public static string? NotRegular(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var buffer = new byte[StatxSize];
        try
        {
            if (statx(AtFdCwd, path, AtSymlinkNoFollow, StatxType, buffer) != 0) return null;
        }
        catch (EntryPointNotFoundException) { return null; } // a libc older than 2.28
        int type = BitConverter.ToUInt16(buffer, ModeOffset) & 0xF000;
        return type switch
        {
            0x8000 => null,
            0x2000 => "a character device",
            0x6000 => "a block device",
            0x1000 => "a FIFO",
            0xC000 => "a socket",
            0xA000 => "a symbolic link",
            0x4000 => "a folder",
            _ => $"a file of type 0x{type:X4}",
        };
    }
}
