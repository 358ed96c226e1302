using System.Runtime.InteropServices;

namespace Motr.Bench.Peers;

/// <summary>
/// The part of LMDB's C API the bench uses, from Debian's liblmdb.so.0 (package liblmdb0). Every call
/// that returns an error code goes through <see cref="Check"/>.
/// </summary>
internal static unsafe partial class LmdbNative
{
    public const string Library = "liblmdb.so.0";

    // mdb_env_open flags
    public const uint MDB_NOSUBDIR = 0x4000, MDB_NOSYNC = 0x10000, MDB_RDONLY = 0x20000, MDB_NOMETASYNC = 0x40000, MDB_WRITEMAP = 0x80000;
    // mdb_dbi_open flags
    public const uint MDB_CREATE = 0x40000;
    // mdb_put flags
    public const uint MDB_NOOVERWRITE = 0x10;
    // MDB_cursor_op
    public const int MDB_FIRST = 0, MDB_NEXT = 8;
    // return codes
    public const int MDB_SUCCESS = 0, MDB_KEYEXIST = -30799, MDB_NOTFOUND = -30798;

    /// <summary>MDB_val: a size and a pointer.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MdbVal
    {
        public nuint Size;
        public byte* Data;
    }

    /// <summary>MDB_stat.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MdbStat
    {
        public uint PageSize;
        public uint Depth;
        public nuint BranchPages;
        public nuint LeafPages;
        public nuint OverflowPages;
        public nuint Entries;
    }

    /// <summary>Whether the library can be loaded (false: install liblmdb0).</summary>
    public static bool IsAvailable()
    {
        if (!NativeLibrary.TryLoad(Library, out nint h)) return false;
        NativeLibrary.Free(h);
        return true;
    }

    public static void Check(int rc, string call)
    {
        if (rc != MDB_SUCCESS) throw new InvalidOperationException($"lmdb: {call} failed: {Error(rc)} ({rc})");
    }

    public static string Error(int rc) => Marshal.PtrToStringUTF8((nint)mdb_strerror(rc)) ?? rc.ToString();

    public static string Version()
    {
        int major, minor, patch;
        return Marshal.PtrToStringUTF8((nint)mdb_version(&major, &minor, &patch)) ?? "?";
    }

    [LibraryImport(Library)] public static partial byte* mdb_version(int* major, int* minor, int* patch);
    [LibraryImport(Library)] public static partial byte* mdb_strerror(int err);
    [LibraryImport(Library)] public static partial int mdb_env_create(out nint env);
    [LibraryImport(Library)] public static partial int mdb_env_set_mapsize(nint env, nuint size);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)] public static partial int mdb_env_open(nint env, string path, uint flags, uint mode);
    [LibraryImport(Library)] public static partial void mdb_env_close(nint env);
    [LibraryImport(Library)] public static partial int mdb_env_get_flags(nint env, out uint flags);
    [LibraryImport(Library)] public static partial int mdb_txn_begin(nint env, nint parent, uint flags, out nint txn);
    [LibraryImport(Library)] public static partial int mdb_txn_commit(nint txn);
    [LibraryImport(Library)] public static partial void mdb_txn_abort(nint txn);
    [LibraryImport(Library)] public static partial void mdb_txn_reset(nint txn);
    [LibraryImport(Library)] public static partial int mdb_txn_renew(nint txn);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)] public static partial int mdb_dbi_open(nint txn, string? name, uint flags, out uint dbi);
    [LibraryImport(Library)] public static partial int mdb_stat(nint txn, uint dbi, MdbStat* stat);
    [LibraryImport(Library)] public static partial int mdb_put(nint txn, uint dbi, MdbVal* key, MdbVal* data, uint flags);
    [LibraryImport(Library), SuppressGCTransition] public static partial int mdb_get(nint txn, uint dbi, MdbVal* key, MdbVal* data);
    [LibraryImport(Library)] public static partial int mdb_del(nint txn, uint dbi, MdbVal* key, MdbVal* data);
    [LibraryImport(Library)] public static partial int mdb_cursor_open(nint txn, uint dbi, out nint cursor);
    [LibraryImport(Library), SuppressGCTransition] public static partial int mdb_cursor_get(nint cursor, MdbVal* key, MdbVal* data, int op);
    [LibraryImport(Library)] public static partial void mdb_cursor_close(nint cursor);
}
