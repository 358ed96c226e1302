using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;

namespace Motr.Be.Tests.Storage;

/// <summary>
/// Segment files opened for scattered writes (<see cref="StorageAccess.ScatteredWrites"/>) keep a staged
/// copy in memory and write changed pages out at flush. What the file holds after a flush must be exactly
/// what was written, whatever the order of writes, growth and concurrent flushes.
/// </summary>
public sealed class StagedFileTests
{
    private static byte[] OnDisk(string dir, string name) => File.ReadAllBytes(Path.Combine(dir, name));

    private static IStorageFile CreateStaged(FileStorage storage, string name, byte[] content)
    {
        using (var f = storage.Open(name, StorageOpenMode.CreateNew))
        {
            f.Write(0, content);
            f.Flush();
        }
        return storage.Open(name, StorageOpenMode.OpenExisting, StorageAccess.ScatteredWrites);
    }

    [Fact]
    public void Opens_with_the_file_content_and_writes_reach_the_file_at_flush()
    {
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        var initial = new byte[3 * 4096 + 100];
        new Random(1).NextBytes(initial);
        using var f = CreateStaged(storage, "seg", initial);
        Assert.Equal(initial.Length, f.Length);
        var back = new byte[initial.Length];
        Assert.Equal(initial.Length, f.Read(0, back));
        Assert.Equal(initial, back);

        f.Write(4090, "straddles a page edge"u8);
        var expected = (byte[])initial.Clone();
        "straddles a page edge"u8.CopyTo(expected.AsSpan(4090));
        Assert.Equal(initial, OnDisk(dir.Path, "seg")); // staged, not yet in the file
        Assert.Equal(expected.Length, f.Read(0, back));
        Assert.Equal(expected, back);

        f.Flush();
        Assert.Equal(expected, OnDisk(dir.Path, "seg"));
    }

    [Fact]
    public void A_flush_counts_the_whole_pages_it_writes_back()
    {
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        using var f = CreateStaged(storage, "seg", new byte[8 * 4096]);
        Assert.Equal(0, f.WrittenBack);

        f.Write(4090, "straddles a page edge"u8);
        f.Write(6 * 4096 + 5, "x"u8);
        Assert.Equal(0, f.WrittenBack); // staged only
        f.Flush();
        Assert.Equal(3 * 4096, f.WrittenBack); // pages 0, 1 and 6, whole
        f.Flush();
        Assert.Equal(3 * 4096, f.WrittenBack); // nothing changed since

        using var plain = storage.Open("plain", StorageOpenMode.CreateNew);
        plain.Write(0, new byte[10_000]);
        plain.Flush();
        Assert.Equal(0, plain.WrittenBack); // no stage: its writes go straight through
    }

    [Fact]
    public void Random_writes_growth_and_flushes_leave_the_file_equal_to_the_model()
    {
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        var model = new List<byte>(new byte[64 * 1024]);
        var rng = new Random(7);
        using var f = CreateStaged(storage, "seg", model.ToArray());
        for (int step = 0; step < 2000; step++)
        {
            int op = rng.Next(100);
            if (op < 85)
            {
                var bytes = new byte[rng.Next(1, 9000)];
                rng.NextBytes(bytes);
                long at = rng.Next(0, model.Count + 5000); // sometimes past the end: the file grows, zeros between
                f.Write(at, bytes);
                while (model.Count < at + bytes.Length) model.Add(0);
                for (int i = 0; i < bytes.Length; i++) model[(int)at + i] = bytes[i];
            }
            else if (op < 92)
            {
                int length = Math.Max(1, model.Count + rng.Next(-20000, 20000));
                f.SetLength(length);
                if (length < model.Count) model.RemoveRange(length, model.Count - length);
                while (model.Count < length) model.Add(0);
            }
            else
            {
                f.Flush();
                Assert.Equal(model.ToArray(), OnDisk(dir.Path, "seg"));
            }
            Assert.Equal(model.Count, f.Length);
        }
        var all = new byte[model.Count];
        Assert.Equal(all.Length, f.Read(0, all));
        Assert.Equal(model.ToArray(), all);
        f.Flush();
        Assert.Equal(model.ToArray(), OnDisk(dir.Path, "seg"));
    }

    [Fact]
    public void A_length_cut_and_regrown_reads_zeros_where_the_cut_was()
    {
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        var full = new byte[3 * 4096];
        Array.Fill(full, (byte)0xAB);
        using var f = CreateStaged(storage, "seg", full);
        f.Write(0, full);
        f.SetLength(5000);
        f.SetLength(3 * 4096);
        var back = new byte[3 * 4096];
        f.Read(0, back);
        Assert.All(back.AsSpan(0, 5000).ToArray(), b => Assert.Equal(0xAB, b));
        Assert.All(back.AsSpan(5000).ToArray(), b => Assert.Equal(0, b));
        f.Flush();
        Assert.Equal(back, OnDisk(dir.Path, "seg"));
    }

    [Fact]
    public async Task Flushes_racing_writes_lose_nothing()
    {
        // The placer writes while the checkpoint thread flushes: a write is in a flush's copy or in the next flush.
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        const int size = 1 << 20;
        var model = new byte[size];
        using var f = CreateStaged(storage, "seg", model);
        using var stop = new CancellationTokenSource();
        int flushes = 0;
        var flusher = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                f.Flush();
                Interlocked.Increment(ref flushes);
            }
        });
        var rng = new Random(11);
        var piece = new byte[200];
        // Write until the flusher has gone round many times (bounded, should it stall).
        for (int i = 0; i < 50_000_000 && Volatile.Read(ref flushes) < 100 && !flusher.IsCompleted; i++)
        {
            rng.NextBytes(piece);
            int length = rng.Next(1, piece.Length);
            int at = rng.Next(0, size - length);
            f.Write(at, piece.AsSpan(0, length));
            piece.AsSpan(0, length).CopyTo(model.AsSpan(at));
        }
        stop.Cancel();
        await flusher;
        Assert.True(flushes >= 100, $"the flusher ran {flushes} times while writes went on");
        f.Flush();
        Assert.Equal(model, OnDisk(dir.Path, "seg"));
    }

    [Fact]
    public void A_flush_that_fails_leaves_its_pages_dirty()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "seg");
        File.WriteAllBytes(path, new byte[5 * 4096]);
        // A device that refuses every write: each write of the flush fails.
        var real = new FileStorage(dir.Path).Open("seg", StorageOpenMode.OpenExisting);
        using var f = new StagedFile(new RefusingWrites(real));
        f.Write(100, "a"u8);
        f.Write(2 * 4096 + 5, "b"u8);
        f.Write(4 * 4096 - 1, "cd"u8); // two pages
        Assert.Equal(4, f.DirtyPageCount);
        Assert.ThrowsAny<Exception>(() => f.Flush());
        Assert.Equal(4, f.DirtyPageCount);
        Assert.Equal(new byte[5 * 4096], File.ReadAllBytes(path));
    }

    [Fact]
    public void A_large_flush_starts_writeback_window_by_window_one_in_flight_while_the_next_is_written()
    {
        using var dir = new TempDir();
        const int size = 11 << 20;
        File.WriteAllBytes(Path.Combine(dir.Path, "seg"), new byte[size]);
        var recording = new RecordingFile(new FileStorage(dir.Path).Open("seg", StorageOpenMode.OpenExisting));
        var model = new byte[size];
        using (var f = new StagedFile(recording))
        {
            // Every other page dirty over the whole file: runs of one page, 11 MiB to cover.
            var rnd = new Random(5);
            for (long page = 0; page < size / 4096; page += 2)
            {
                var bytes = new byte[64];
                rnd.NextBytes(bytes);
                f.Write(page * 4096 + 100, bytes);
                bytes.CopyTo(model, page * 4096 + 100);
            }
            f.Flush();

            // Windows of at least WritebackWindow bytes, in file order, each started before it is waited for,
            // and the previous one waited for before the next starts: one window's writeback in flight.
            var started = new List<(long Offset, long Length)>();
            int inFlight = 0, maxInFlight = 0;
            long end = 0;
            foreach (var (offset, length, wait) in recording.Calls)
            {
                if (!wait)
                {
                    Assert.True(length >= StagedFile.WritebackWindow, $"window [{offset}, +{length}) shorter than {StagedFile.WritebackWindow}");
                    Assert.True(offset >= end, "windows go forward through the file");
                    end = offset + length;
                    started.Add((offset, length));
                    maxInFlight = Math.Max(maxInFlight, ++inFlight);
                }
                else
                {
                    Assert.Contains((offset, length), started);
                    inFlight--;
                }
            }
            Assert.Equal(size / StagedFile.WritebackWindow, started.Count); // 11 MiB: five full windows, the rest left to the fdatasync
            Assert.Equal(1, maxInFlight);
            Assert.Equal(1, recording.Flushes);
        }
        Assert.Equal(model, OnDisk(dir.Path, "seg"));
    }

    [Fact]
    public void Whole_pages_go_out_through_the_direct_handle_and_a_partial_last_page_through_the_cache()
    {
        using var dir = new TempDir();
        const int size = 9 * 4096 + 700;
        File.WriteAllBytes(Path.Combine(dir.Path, "seg"), new byte[size]);
        var storage = new FileStorage(dir.Path);
        var cached = new RecordingFile(storage.Open("seg", StorageOpenMode.OpenExisting));
        var direct = new RecordingFile(storage.Open("seg", StorageOpenMode.OpenExisting));
        var model = new byte[size];
        using (var f = new StagedFile(cached, direct))
        {
            var rnd = new Random(11);
            foreach (long at in new long[] { 5, 4096 * 2 + 4000, 4096 * 6 + 17, size - 300 })
            {
                var bytes = new byte[200];
                rnd.NextBytes(bytes);
                f.Write(at, bytes);
                bytes.CopyTo(model, at);
            }
            f.Flush();
            Assert.True(f.WritesDirect);
            Assert.Equal(4 * 4096, f.DirectBytes);
        }
        // Pages 0, 2-3 (one run), 6: whole pages, direct; page 9 ends the file 700 bytes in: cached.
        Assert.Equal([(0L, 4096), (2 * 4096L, 2 * 4096), (6 * 4096L, 4096)], direct.Writes);
        Assert.Equal([(9 * 4096L, 700)], cached.Writes);
        Assert.Equal(model, OnDisk(dir.Path, "seg"));
    }

    [Fact]
    public void A_direct_handle_that_refuses_a_write_is_dropped_and_the_flush_goes_through_the_cache()
    {
        using var dir = new TempDir();
        const int size = 4 * 4096;
        File.WriteAllBytes(Path.Combine(dir.Path, "seg"), new byte[size]);
        var storage = new FileStorage(dir.Path);
        var model = new byte[size];
        using (var f = new StagedFile(storage.Open("seg", StorageOpenMode.OpenExisting), new RefusingWrites(storage.Open("seg", StorageOpenMode.OpenExisting))))
        {
            f.Write(4096 + 10, "through the cache"u8);
            "through the cache"u8.CopyTo(model.AsSpan(4096 + 10));
            f.Flush();
            Assert.False(f.WritesDirect);
            Assert.Equal(0, f.DirtyPageCount);
            Assert.Equal(model, OnDisk(dir.Path, "seg"));
            f.Write(3 * 4096, "later flushes too"u8);
            "later flushes too"u8.CopyTo(model.AsSpan(3 * 4096));
            f.Flush();
        }
        Assert.Equal(model, OnDisk(dir.Path, "seg"));
    }

    [Fact]
    public void Segment_files_on_linux_write_their_pages_direct()
    {
        // The test folder is on the machine's own file system (ext4 here), which takes O_DIRECT writes.
        if (!OperatingSystem.IsLinux()) return;
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        var initial = new byte[8 * 4096];
        using var f = (StagedFile)CreateStaged(storage, "seg", initial);
        f.Write(3 * 4096 + 1, "direct"u8);
        "direct"u8.CopyTo(initial.AsSpan(3 * 4096 + 1));
        f.Flush();
        Assert.True(f.WritesDirect);
        Assert.Equal(4096, f.DirectBytes);
        Assert.Equal(initial, OnDisk(dir.Path, "seg"));
    }

    /// <summary>A real file that records the writes, writeback hints and flushes it is given.</summary>
    private sealed class RecordingFile(IStorageFile inner) : IStorageFile
    {
        public readonly List<(long Offset, int Length)> Writes = new();
        public readonly List<(long Offset, long Length, bool Wait)> Calls = new();
        public int Flushes;
        public string Name => inner.Name;
        public long Length => inner.Length;
        public int Read(long offset, Span<byte> destination) => inner.Read(offset, destination);
        public void Write(long offset, ReadOnlySpan<byte> source)
        {
            Writes.Add((offset, source.Length));
            inner.Write(offset, source);
        }
        public void SetLength(long length) => inner.SetLength(length);
        public void Flush() { Flushes++; inner.Flush(); }
        public void Writeback(long offset, long length, bool wait)
        {
            Calls.Add((offset, length, wait));
            inner.Writeback(offset, length, wait);
        }
        public void Dispose() => inner.Dispose();
    }

    /// <summary>A file whose writes all fail, as a device out of space or gone would.</summary>
    private sealed class RefusingWrites(IStorageFile inner) : IStorageFile
    {
        public string Name => inner.Name;
        public long Length => inner.Length;
        public int Read(long offset, Span<byte> destination) => inner.Read(offset, destination);
        public void Write(long offset, ReadOnlySpan<byte> source) => throw new IOException($"{inner}: write of {source.Length} bytes at {offset} refused");
        public void SetLength(long length) => inner.SetLength(length);
        public void Flush() => inner.Flush();
        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public void A_reopened_file_stages_what_the_last_flush_wrote()
    {
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        var content = new byte[10_000];
        using (var f = CreateStaged(storage, "seg", content))
        {
            f.Write(9_000, "kept"u8);
            f.Flush();
            f.Write(100, "not flushed: gone with the stage"u8);
        }
        using var again = storage.Open("seg", StorageOpenMode.OpenExisting, StorageAccess.ScatteredWrites);
        var back = new byte[content.Length];
        again.Read(0, back);
        "kept"u8.CopyTo(content.AsSpan(9_000));
        Assert.Equal(content, back);
    }
}

/// <summary>Loading skips the holes of sparse files (a new segment is mostly hole): what it reads must still equal the file.</summary>
public sealed class FileDataExtentTests
{
    [Fact]
    public void Data_extents_cover_every_written_byte_and_skip_the_holes()
    {
        using var dir = new TempDir();
        var storage = new FileStorage(dir.Path);
        const int size = 8 << 20;
        var rng = new Random(3);
        using (var f = storage.Open("sparse", StorageOpenMode.CreateNew))
        {
            f.SetLength(size);
            for (int i = 0; i < 20; i++)
            {
                var bytes = new byte[rng.Next(1, 9000)];
                rng.NextBytes(bytes);
                f.Write(rng.Next(0, size - bytes.Length), bytes);
            }
            f.Write(0, "head"u8);
            f.Flush();
        }
        var expected = File.ReadAllBytes(Path.Combine(dir.Path, "sparse"));
        using var g = storage.Open("sparse", StorageOpenMode.OpenExisting);
        var rebuilt = new byte[size];
        long at = 0, covered = 0;
        while (g.NextData(at, out long start, out long end))
        {
            Assert.True(start >= at && end > start && end <= size, $"extent [{start}, {end}) after {at}");
            g.Read(start, rebuilt.AsSpan((int)start, (int)(end - start)));
            covered += end - start;
            at = end;
        }
        Assert.Equal(expected, rebuilt);
        if (OperatingSystem.IsLinux()) Assert.True(covered < size / 2, $"extents cover {covered} of {size} bytes: the holes were not skipped");
    }
}

/// <summary>A gather write (the log writer's record: header, group chunks, padding) lands as its parts written in turn would.</summary>
public sealed class GatherWriteTests
{
    [Fact]
    public void Parts_land_one_after_another_on_a_real_file_and_on_the_simulated_one()
    {
        var rng = new Random(11);
        var parts = new List<ReadOnlyMemory<byte>>();
        var expected = new List<byte>();
        foreach (int len in new[] { 128, 4096 + 40, 1, 0, 9000, 344 })
        {
            var p = new byte[len + 3];
            rng.NextBytes(p);
            parts.Add(p.AsMemory(3, len)); // not at the start of its array
            expected.AddRange(p.AsSpan(3, len).ToArray());
        }
        const long at = 1000;

        using var dir = new TempDir();
        var sim = new SimStorage();
        foreach (IStorage storage in new IStorage[] { new FileStorage(dir.Path), sim })
        {
            using var f = storage.Open("log", StorageOpenMode.CreateNew);
            f.Write(at, parts);
            f.Flush();
            Assert.Equal(at + expected.Count, f.Length);
            var back = new byte[expected.Count];
            Assert.Equal(back.Length, f.Read(at, back));
            Assert.Equal(expected.ToArray(), back);
        }
    }
}
