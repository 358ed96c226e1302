namespace Motr.Be.Storage;

/// <summary>
/// An in-memory <see cref="IStorage"/> for crash tests. It behaves like a folder of files and records
/// every write, length change and flush in an op log, so <see cref="CrashImage"/> can build the disk a
/// power failure after any prefix of the log would leave, including dropped, torn and reordered
/// unsynced writes; <see cref="FailAfter"/> and <see cref="PowerOff"/> inject device faults.
/// </summary>
/// <remarks>
/// <para>Durability model. Content changes (<see cref="IStorageFile.Write(long, ReadOnlySpan{byte})"/>, <see cref="IStorageFile.SetLength"/>)
/// are volatile until a <see cref="IStorageFile.Flush"/> of the same file, which makes every earlier change of
/// that file durable and no other file's. Creating, renaming and deleting a file are durable at once (the
/// real storage syncs the directory after each); they are recorded in the op log too
/// (<see cref="SimOpKind.Create"/>, <see cref="SimOpKind.Rename"/>, <see cref="SimOpKind.Delete"/>) so crash
/// images see them from that point on. Files are inodes: an open handle keeps writing to its file across a
/// rename, and the unsynced changes of a renamed file move with it; a replaced or deleted file vanishes from
/// later images along with its unsynced changes.</para>
/// <para>A storage made by <see cref="FromFiles"/>, <see cref="Clone"/> or <see cref="CrashImage"/> starts with
/// an empty op log and its initial content fully durable. All members are thread-safe (one lock).</para>
/// </remarks>
public sealed partial class SimStorage : IStorage
{
    /// <summary>The sector size at which writes can tear.</summary>
    public const int SectorSize = 512;

    private readonly object _gate = new();
    private readonly Dictionary<string, Inode> _names = new(StringComparer.Ordinal);
    private readonly List<SimOp> _ops = new();
    // The durable starting content, which crash images replay the op log on top of; never written (their pages are shared).
    private readonly List<BaseFile> _base = new();
    private long _nextId = 1;
    private bool _poweredOff;
    private SimFault _fault;
    private int _faultCountdown;
    private string? _faultFile;

    /// <summary>Creates an empty storage with an empty op log.</summary>
    public SimStorage() { }

    private SimStorage(List<KeyValuePair<string, Buffer>> files)
    {
        foreach (var (name, buffer) in files)
        {
            long id = _nextId++;
            _base.Add(new BaseFile(name, id, buffer.Share()));
            _names.Add(name, new Inode(id, name, buffer.Share()));
        }
    }

    /// <summary>A storage holding copies of <paramref name="files"/> (name to content), all durable, with an empty op log.</summary>
    public static SimStorage FromFiles(IReadOnlyDictionary<string, byte[]> files)
    {
        ArgumentNullException.ThrowIfNull(files);
        var list = new List<KeyValuePair<string, Buffer>>(files.Count);
        foreach (var (name, data) in files)
        {
            CheckName(name);
            list.Add(new(name, Buffer.CopyOf(data)));
        }
        return new SimStorage(list);
    }

    /// <summary>A new independent storage holding the current content of every file, all durable, with an empty op log and no faults.</summary>
    public SimStorage Clone()
    {
        lock (_gate)
        {
            var list = new List<KeyValuePair<string, Buffer>>(_names.Count);
            foreach (var (name, inode) in _names) list.Add(new(name, inode.Content.Share()));
            return new SimStorage(list);
        }
    }

    private int _locked; // 0: free; -1: taken by Lock; n > 0: taken by n LockShared

    /// <inheritdoc />
    /// <remarks>Per storage object: a <see cref="Clone"/> or a crash image starts unlocked, as a rebooted disk would.</remarks>
    public IDisposable Lock()
    {
        if (Interlocked.CompareExchange(ref _locked, -1, 0) != 0)
            throw new BeException("sim: the folder is in use by another engine (the storage is locked)");
        return new SimLock(this, shared: false);
    }

    /// <inheritdoc />
    /// <remarks>Shared with other <see cref="LockShared"/> holders of this storage object; refused while <see cref="Lock"/> is held, and refuses it.</remarks>
    public IDisposable LockShared()
    {
        for (int held = Volatile.Read(ref _locked); ; )
        {
            if (held < 0) throw new BeException("sim: the folder is in use by another engine (the storage is locked)");
            int seen = Interlocked.CompareExchange(ref _locked, held + 1, held);
            if (seen == held) return new SimLock(this, shared: true);
            held = seen;
        }
    }

    private sealed class SimLock(SimStorage storage, bool shared) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0) return;
            if (shared) Interlocked.Decrement(ref storage._locked);
            else Volatile.Write(ref storage._locked, 0);
        }
    }

    /// <inheritdoc />
    public string Location => "sim";

    /// <summary>Number of ops in the op log (writes, length changes, flushes, markers, creates, renames, deletes).</summary>
    public int OpCount
    {
        get { lock (_gate) return _ops.Count; }
    }

    /// <summary>The op at <paramref name="index"/> (0-based) of the op log.</summary>
    public SimOp GetOp(int index)
    {
        lock (_gate)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, _ops.Count);
            return _ops[index];
        }
    }

    /// <summary>
    /// Appends a <see cref="SimOpKind.Marker"/> op carrying <paramref name="tag"/>, e.g. "tx 17 reported
    /// persistent", so tests can relate crash points to what the engine had promised. Works after
    /// <see cref="PowerOff"/> too (a marker is not a device operation).
    /// </summary>
    public void Mark(object tag)
    {
        ArgumentNullException.ThrowIfNull(tag);
        lock (_gate) _ops.Add(SimOp.Marker(tag));
    }

    /// <inheritdoc />
    /// <exception cref="FileNotFoundException"><see cref="StorageOpenMode.OpenExisting"/> and the file is missing.</exception>
    /// <exception cref="IOException"><see cref="StorageOpenMode.CreateNew"/> and the file exists, or the device is off.</exception>
    public IStorageFile Open(string name, StorageOpenMode mode, StorageAccess access = StorageAccess.Positional)
    {
        CheckName(name);
        lock (_gate)
        {
            if (mode == StorageOpenMode.CreateNew)
            {
                if (access == StorageAccess.ReadOnly) throw new ArgumentException($"sim: {name}: a read-only file must exist (StorageOpenMode.OpenExisting)", nameof(mode));
                ThrowIfOff("create " + name);
                if (_names.ContainsKey(name)) throw new IOException($"sim: the file '{name}' already exists");
                var inode = new Inode(_nextId++, name, Buffer.Empty());
                _names.Add(name, inode);
                _ops.Add(SimOp.Create(name, inode.Id));
                return new SimFile(this, name, inode);
            }
            if (!_names.TryGetValue(name, out var existing))
                throw new FileNotFoundException($"sim: could not find file '{name}'", name);
            return new SimFile(this, name, existing, access == StorageAccess.ReadOnly);
        }
    }

    /// <inheritdoc />
    public bool Exists(string name)
    {
        CheckName(name);
        lock (_gate) return _names.ContainsKey(name);
    }

    /// <inheritdoc />
    public IReadOnlyList<string> List()
    {
        lock (_gate)
        {
            var names = new List<string>(_names.Keys);
            names.Sort(StringComparer.Ordinal);
            return names;
        }
    }

    /// <inheritdoc />
    /// <exception cref="FileNotFoundException"><paramref name="from"/> does not exist.</exception>
    public void Rename(string from, string to)
    {
        CheckName(from);
        CheckName(to);
        lock (_gate)
        {
            ThrowIfOff("rename " + from);
            if (!_names.TryGetValue(from, out var inode))
                throw new FileNotFoundException($"sim: could not find file '{from}'", from);
            if (from == to) return;
            if (_names.Remove(to, out var replaced)) replaced.Name = null;
            _names.Remove(from);
            _names.Add(to, inode);
            inode.Name = to;
            _ops.Add(SimOp.Rename(from, inode.Id, to));
        }
    }

    /// <inheritdoc />
    public void Delete(string name)
    {
        CheckName(name);
        lock (_gate)
        {
            ThrowIfOff("delete " + name);
            if (!_names.Remove(name, out var inode)) return;
            inode.Name = null;
            _ops.Add(SimOp.Delete(name, inode.Id));
        }
    }

    /// <summary>A copy of the current (not necessarily durable) content of <paramref name="name"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public byte[] ReadAll(string name)
    {
        lock (_gate) return Find(name).Content.ToArray();
    }

    /// <summary>
    /// Edits the current content of <paramref name="name"/> directly (extending and zero-filling if needed), with no
    /// op logged and no fault checks: a test's way to corrupt a file. The edit is visible in crash images only if the
    /// op log is still empty (as on a fresh <see cref="CrashImage"/>, <see cref="Clone"/> or <see cref="FromFiles"/>
    /// storage): it then changes the durable starting content too.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public void Overwrite(string name, long offset, ReadOnlySpan<byte> bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        lock (_gate)
        {
            var inode = Find(name);
            inode.Content.Write(offset, bytes);
            if (_ops.Count != 0) return;
            for (int i = 0; i < _base.Count; i++)
            {
                if (_base[i].Id == inode.Id)
                {
                    _base[i] = _base[i] with { Content = inode.Content.Share() };
                    return;
                }
            }
            _base.Add(new BaseFile(name, inode.Id, inode.Content.Share()));
        }
    }

    /// <summary>
    /// Arms a fault, replacing any earlier one: the next <paramref name="ops"/> device operations (writes, length
    /// changes, flushes, of any kind) succeed; after them every operation of <paramref name="kind"/> throws
    /// <see cref="IOException"/> ("sim: injected fault ...") without changing content or the op log, until
    /// <see cref="ClearFault"/>. Other operations go on working. Creates, renames and deletes are not counted and do
    /// not fail. With <paramref name="file"/>, only that file's operations are counted and fail (a device that
    /// refuses one file's writes, as a full or failing volume under a segment file would, while the log's work).
    /// </summary>
    public void FailAfter(int ops, SimFault kind, string? file = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ops);
        if (file is not null) CheckName(file);
        lock (_gate)
        {
            _fault = kind;
            _faultCountdown = ops;
            _faultFile = file;
        }
    }

    /// <summary>Disarms a fault armed by <see cref="FailAfter"/> (not <see cref="PowerOff"/>).</summary>
    public void ClearFault()
    {
        lock (_gate) (_fault, _faultFile) = (SimFault.None, null);
    }

    /// <summary>
    /// Cuts the power: from now on every operation that would change the device (write, length change, flush,
    /// create, rename, delete) throws <see cref="IOException"/>; reading the current content (opening existing
    /// files, <see cref="IStorageFile.Read"/>, <see cref="ReadAll"/>, <see cref="List"/>) still works, and so does
    /// <see cref="Mark"/>. Build the disk the crash left with <see cref="CrashImage"/>(<see cref="OpCount"/>, ...).
    /// </summary>
    public void PowerOff()
    {
        lock (_gate) _poweredOff = true;
    }

    /// <summary>Whether <see cref="PowerOff"/> was called.</summary>
    public bool IsPoweredOff
    {
        get { lock (_gate) return _poweredOff; }
    }

    private Inode Find(string name)
    {
        CheckName(name);
        if (!_names.TryGetValue(name, out var inode))
            throw new FileNotFoundException($"sim: could not find file '{name}'", name);
        return inode;
    }

    private void ThrowIfOff(string what)
    {
        if (_poweredOff) throw new IOException($"sim: device is powered off ({what})");
    }

    // Called under the lock before a device op changes anything.
    private void CheckDevice(SimFault kind, string file, string what)
    {
        ThrowIfOff(what);
        if (_fault == SimFault.None) return;
        if (_faultFile is not null && !string.Equals(_faultFile, file, StringComparison.Ordinal)) return;
        if (_faultCountdown > 0)
        {
            _faultCountdown--;
            return;
        }
        if ((_fault & kind) != 0) throw new IOException($"sim: injected fault ({what})");
    }

    private static void CheckName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0 || name.Contains('/') || name.Contains('\\') || name is "." or "..")
            throw new ArgumentException($"'{name}' is not a plain file name", nameof(name));
    }

    private readonly record struct BaseFile(string Name, long Id, Buffer Content);

    private sealed class Inode(long id, string name, Buffer content)
    {
        public long Id { get; } = id;
        /// <summary>The current name; null once deleted or replaced by a rename.</summary>
        public string? Name { get; set; } = name;
        public Buffer Content { get; } = content;
    }

    private sealed class SimFile(SimStorage owner, string name, Inode inode, bool readOnly = false) : IStorageFile
    {
        private bool _disposed;

        /// <summary>A file opened <see cref="StorageAccess.ReadOnly"/> refuses every change, before the op log sees it.</summary>
        private void ThrowIfReadOnly(string what)
        {
            if (readOnly) throw new NotSupportedException($"sim: cannot {what} {Name}: the file is open read-only");
        }

        public string Name { get; } = name;

        public long Length
        {
            get
            {
                lock (owner._gate)
                {
                    ObjectDisposedException.ThrowIf(_disposed, this);
                    return inode.Content.Length;
                }
            }
        }

        public int Read(long offset, Span<byte> destination)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(offset);
            lock (owner._gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                return inode.Content.Read(offset, destination);
            }
        }

        public void Write(long offset, ReadOnlySpan<byte> source)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(offset);
            Buffer.CheckSize(offset + source.Length);
            ThrowIfReadOnly("write");
            lock (owner._gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                owner.CheckDevice(SimFault.Write, inode.Name ?? Name, $"write {Name} @{offset}, {source.Length} B");
                inode.Content.Write(offset, source);
                owner._ops.Add(SimOp.Write(inode.Name ?? Name, inode.Id, offset, source.ToArray()));
            }
        }

        public void SetLength(long length)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(length);
            Buffer.CheckSize(length);
            ThrowIfReadOnly("set the length of");
            lock (owner._gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                owner.CheckDevice(SimFault.Write, inode.Name ?? Name, $"set length of {Name} to {length}");
                inode.Content.SetLength(length);
                owner._ops.Add(SimOp.SetLength(inode.Name ?? Name, inode.Id, length));
            }
        }

        public void Flush()
        {
            ThrowIfReadOnly("flush");
            lock (owner._gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                owner.CheckDevice(SimFault.Flush, inode.Name ?? Name, $"flush {Name}");
                owner._ops.Add(SimOp.Flush(inode.Name ?? Name, inode.Id));
            }
        }

        public void Dispose()
        {
            lock (owner._gate) _disposed = true;
        }

        public override string ToString() => "sim:" + Name;
    }

    /// <summary>
    /// A file's content as 64 KiB pages with copy-on-write sharing: <see cref="Share"/> makes a second buffer over
    /// the same pages, and a page is written in place only by a buffer that owns it (copied it or created it), so
    /// crash images, the replay state and the base content share unchanged pages. A missing page reads as zeros.
    /// Bytes at or past <see cref="Length"/> are always zero (or their page missing).
    /// </summary>
    private sealed class Buffer
    {
        private const int PageShift = 16;
        private const int PageSize = 1 << PageShift;
        private byte[]?[] _pages;
        private bool[] _owned;
        private long _length;

        private Buffer(byte[]?[] pages, long length)
        {
            _pages = pages;
            _owned = new bool[pages.Length];
            _length = length;
        }

        public static Buffer Empty() => new([], 0);

        /// <summary>A buffer holding a copy of <paramref name="data"/>.</summary>
        public static Buffer CopyOf(byte[] data)
        {
            var b = Empty();
            b.Write(0, data);
            return b;
        }

        public long Length => _length;

        public static void CheckSize(long size)
        {
            if (size > Array.MaxLength) throw new IOException($"sim: a file of {size} bytes is too large");
        }

        /// <summary>A new buffer with the same content, sharing the pages; neither writes them in place again.</summary>
        public Buffer Share()
        {
            Array.Clear(_owned);
            return new Buffer((byte[]?[])_pages.Clone(), _length);
        }

        public byte[] ToArray()
        {
            var result = new byte[_length];
            Read(0, result);
            return result;
        }

        public int Read(long offset, Span<byte> destination)
        {
            if (offset >= _length) return 0;
            int n = (int)Math.Min(destination.Length, _length - offset);
            int done = 0;
            while (done < n)
            {
                long pos = offset + done;
                int page = (int)(pos >> PageShift), inPage = (int)(pos & (PageSize - 1));
                int chunk = Math.Min(n - done, PageSize - inPage);
                var target = destination.Slice(done, chunk);
                var src = page < _pages.Length ? _pages[page] : null; // grown by SetLength: zeros
                if (src is null) target.Clear();
                else src.AsSpan(inPage, chunk).CopyTo(target);
                done += chunk;
            }
            return n;
        }

        public void Write(long offset, ReadOnlySpan<byte> source)
        {
            long end = offset + source.Length;
            CheckSize(end);
            if (source.Length == 0) return;
            int done = 0;
            while (done < source.Length)
            {
                long pos = offset + done;
                int page = (int)(pos >> PageShift), inPage = (int)(pos & (PageSize - 1));
                int chunk = Math.Min(source.Length - done, PageSize - inPage);
                source.Slice(done, chunk).CopyTo(WritablePage(page).AsSpan(inPage));
                done += chunk;
            }
            if (end > _length) _length = end;
        }

        public void SetLength(long length)
        {
            CheckSize(length);
            if (length < _length)
            {
                // Keep the zero tail: clear the rest of the last kept page, drop the pages past it.
                int keep = (int)((length + PageSize - 1) >> PageShift);
                int inPage = (int)(length & (PageSize - 1));
                if (inPage != 0 && keep <= _pages.Length && _pages[keep - 1] is not null) WritablePage(keep - 1).AsSpan(inPage).Clear();
                for (int i = keep; i < _pages.Length; i++)
                {
                    _pages[i] = null;
                    _owned[i] = false;
                }
            }
            _length = length;
        }

        private byte[] WritablePage(int page)
        {
            if (page >= _pages.Length)
            {
                int size = Math.Max(page + 1, 2 * _pages.Length);
                Array.Resize(ref _pages, size);
                Array.Resize(ref _owned, size);
            }
            var p = _pages[page];
            if (p is not null && _owned[page]) return p;
            var fresh = new byte[PageSize];
            p?.CopyTo(fresh, 0);
            _pages[page] = fresh;
            _owned[page] = true;
            return fresh;
        }
    }
}
