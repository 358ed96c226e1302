using Motr.Be.Storage;

namespace Motr.Be.Tests.Storage;

public sealed class SimStorageTests
{
    private static readonly CrashVariant[] AllVariants =
        [CrashVariant.DropUnsynced, CrashVariant.KeepUnsynced, CrashVariant.TornLast, CrashVariant.Random];

    private static byte[] Fill(int length, byte value)
    {
        var b = new byte[length];
        Array.Fill(b, value);
        return b;
    }

    private static byte[] Concat(params byte[][] parts)
    {
        var all = new List<byte>();
        foreach (var p in parts) all.AddRange(p);
        return all.ToArray();
    }

    private static void WriteFile(SimStorage s, string name, byte[] content, bool flush)
    {
        using var f = s.Open(name, StorageOpenMode.CreateNew);
        f.Write(0, content);
        if (flush) f.Flush();
    }

    // ---- behaves like a folder of files ----

    [Fact]
    public void Open_modes_fail_like_the_real_storage()
    {
        var s = new SimStorage();
        Assert.Equal("sim", s.Location);
        Assert.Throws<FileNotFoundException>(() => s.Open("a", StorageOpenMode.OpenExisting));
        using (s.Open("a", StorageOpenMode.CreateNew)) { }
        var ex = Assert.Throws<IOException>(() => s.Open("a", StorageOpenMode.CreateNew));
        Assert.IsNotType<FileNotFoundException>(ex);
        using var again = s.Open("a", StorageOpenMode.OpenExisting);
        Assert.Equal("a", again.Name);
        Assert.Equal(0, again.Length);
        Assert.Throws<ArgumentException>(() => s.Open("x/y", StorageOpenMode.CreateNew));
        Assert.Throws<ArgumentException>(() => s.Open("..", StorageOpenMode.CreateNew));
    }

    [Fact]
    public void List_is_ordinal_and_exists_rename_delete_work()
    {
        var s = new SimStorage();
        foreach (var n in new[] { "b", "B", "a", "a10", "a2" }) WriteFile(s, n, [1], flush: false);
        Assert.Equal(new[] { "B", "a", "a10", "a2", "b" }, s.List());
        Assert.True(s.Exists("a2"));
        Assert.False(s.Exists("c"));

        WriteFile(s, "tmp", [7, 8, 9], flush: true);
        s.Rename("tmp", "a");                      // replaces
        Assert.False(s.Exists("tmp"));
        Assert.Equal(new byte[] { 7, 8, 9 }, s.ReadAll("a"));
        Assert.Throws<FileNotFoundException>(() => s.Rename("tmp", "z"));

        s.Delete("a");
        s.Delete("never-existed");                 // no error, like File.Delete
        Assert.False(s.Exists("a"));
        Assert.Equal(new[] { "B", "a10", "a2", "b" }, s.List());
        Assert.Throws<FileNotFoundException>(() => s.ReadAll("a"));
    }

    [Fact]
    public void Read_is_short_at_eof_and_write_zero_fills_gaps()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, [1, 2, 3]);
        f.Write(6, [9]);
        Assert.Equal(7, f.Length);
        Assert.Equal(new byte[] { 1, 2, 3, 0, 0, 0, 9 }, s.ReadAll("f"));

        var buf = Fill(10, 0xEE);
        Assert.Equal(5, f.Read(2, buf));
        Assert.Equal(new byte[] { 3, 0, 0, 0, 9, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE }, buf);
        Assert.Equal(0, f.Read(7, buf));
        Assert.Equal(0, f.Read(100, buf));
    }

    [Fact]
    public void SetLength_shrink_then_grow_reads_zeros()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, Fill(100, 0x55));
        f.SetLength(10);
        Assert.Equal(10, f.Length);
        f.SetLength(20);
        Assert.Equal(Concat(Fill(10, 0x55), Fill(10, 0)), s.ReadAll("f"));
        f.Write(30, [1]);
        Assert.Equal(Concat(Fill(10, 0x55), Fill(20, 0), [1]), s.ReadAll("f"));
    }

    [Fact]
    public void Disposed_handle_throws()
    {
        var s = new SimStorage();
        var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Dispose();
        Assert.Throws<ObjectDisposedException>(() => f.Write(0, [1]));
        Assert.Throws<ObjectDisposedException>(() => f.Flush());
    }

    // ---- the op log ----

    [Fact]
    public void Op_log_records_every_operation_in_order_with_copies()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        var data = new byte[] { 1, 2, 3 };
        f.Write(5, data);
        data[0] = 99;                              // the log keeps its own copy
        f.SetLength(4);
        s.Mark("tx 17 persistent");
        f.Flush();
        s.Rename("f", "g");
        s.Delete("g");

        Assert.Equal(7, s.OpCount);
        Assert.Equal(SimOpKind.Create, s.GetOp(0).Kind);
        var w = s.GetOp(1);
        Assert.Equal((SimOpKind.Write, "f", 5L, 3L), (w.Kind, w.File, w.Offset, w.Length));
        Assert.Equal(new byte[] { 1, 2, 3 }, w.Data.ToArray());
        Assert.Equal((SimOpKind.SetLength, "f", 4L), (s.GetOp(2).Kind, s.GetOp(2).File, s.GetOp(2).Length));
        Assert.Equal((SimOpKind.Marker, (object?)"tx 17 persistent"), (s.GetOp(3).Kind, s.GetOp(3).Tag));
        Assert.Equal((SimOpKind.Flush, "f"), (s.GetOp(4).Kind, s.GetOp(4).File));
        Assert.Equal((SimOpKind.Rename, "f", "g"), (s.GetOp(5).Kind, s.GetOp(5).File, s.GetOp(5).NewName));
        Assert.Equal((SimOpKind.Delete, "g"), (s.GetOp(6).Kind, s.GetOp(6).File));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.GetOp(7));
    }

    // ---- crash images ----

    [Fact]
    public void Flush_makes_writes_durable_only_for_that_file()
    {
        var s = new SimStorage();
        using var a = s.Open("a", StorageOpenMode.CreateNew);
        using var b = s.Open("b", StorageOpenMode.CreateNew);
        a.Write(0, [1, 1, 1]);
        b.Write(0, [2, 2]);
        a.Flush();
        b.Write(2, [3]);
        a.Write(3, [4]);                           // after a's flush: unsynced

        var drop = s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, seed: 1);
        Assert.Equal(new[] { "a", "b" }, drop.List());
        Assert.Equal(new byte[] { 1, 1, 1 }, drop.ReadAll("a"));
        Assert.Empty(drop.ReadAll("b"));

        var keep = s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, seed: 1);
        Assert.Equal(new byte[] { 1, 1, 1, 4 }, keep.ReadAll("a"));
        Assert.Equal(new byte[] { 2, 2, 3 }, keep.ReadAll("b"));

        // Crash right before a's flush (ops: create a, create b, write a, write b | flush a ...).
        var before = s.CrashImage(4, CrashVariant.DropUnsynced, seed: 1);
        Assert.Empty(before.ReadAll("a"));
        Assert.Equal(0, before.OpCount);
    }

    [Fact]
    public void Drop_and_keep_give_exact_contents()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        var v1 = Fill(1000, 0x11);
        f.Write(0, v1);
        f.Flush();
        int synced = s.OpCount;
        f.Write(200, Fill(100, 0x22));
        f.Write(1500, Fill(10, 0x33));             // extends with a zero gap

        var expectedKeep = Concat(Fill(200, 0x11), Fill(100, 0x22), Fill(700, 0x11), Fill(500, 0), Fill(10, 0x33));
        Assert.Equal(expectedKeep, s.ReadAll("f"));
        Assert.Equal(v1, s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 5).ReadAll("f"));
        Assert.Equal(expectedKeep, s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 5).ReadAll("f"));
        Assert.Equal(v1, s.CrashImage(synced, CrashVariant.KeepUnsynced, 5).ReadAll("f"));
        // Keep after only the first unsynced write.
        Assert.Equal(Concat(Fill(200, 0x11), Fill(100, 0x22), Fill(700, 0x11)),
            s.CrashImage(synced + 1, CrashVariant.KeepUnsynced, 5).ReadAll("f"));
        // The source is unchanged by making images, and images are independent of it and of each other.
        var img = s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 5);
        img.Overwrite("f", 0, [0xFF]);
        Assert.Equal(0x11, s.ReadAll("f")[0]);
        Assert.Equal(0x11, s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 5).ReadAll("f")[0]);
    }

    [Fact]
    public void TornLast_applies_whole_sectors_of_the_last_write_only()
    {
        const int oldByte = 0xAA, newByte = 0xBB, earlier = 0xCC;
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, Fill(4096, oldByte));
        f.Flush();
        f.Write(4000, Fill(20, earlier));          // unsynced, not last: applied whole
        f.Write(100, Fill(3000, newByte));         // last unsynced write: torn, sectors 0..6 partly

        bool sawMixed = false, sawSomeNew = false, sawSomeOld = false;
        for (int seed = 0; seed < 40; seed++)
        {
            var img = s.CrashImage(s.OpCount, CrashVariant.TornLast, seed).ReadAll("f");
            Assert.Equal(4096, img.Length);
            Assert.All(img[..100], b => Assert.Equal(oldByte, b));
            Assert.All(img[3100..4000], b => Assert.Equal(oldByte, b));
            Assert.All(img[4000..4020], b => Assert.Equal(earlier, b));
            Assert.All(img[4020..], b => Assert.Equal(oldByte, b));
            int newSectors = 0;
            for (int sector = 0; sector * 512 < 3100; sector++)
            {
                int start = Math.Max(100, sector * 512), end = Math.Min(3100, (sector + 1) * 512);
                byte first = img[start];
                Assert.True(first is oldByte or newByte, $"seed {seed} sector {sector}: {first:X2}");
                for (int i = start; i < end; i++)
                    Assert.True(img[i] == first, $"seed {seed}: sector {sector} is torn inside at {i}");
                if (first == newByte) newSectors++;
            }
            if (newSectors is > 0 and < 7) sawMixed = true;
            if (newSectors > 0) sawSomeNew = true;
            if (newSectors < 7) sawSomeOld = true;
            Assert.Equal(img, s.CrashImage(s.OpCount, CrashVariant.TornLast, seed).ReadAll("f"));
        }
        Assert.True(sawMixed && sawSomeNew && sawSomeOld);
    }

    [Fact]
    public void TornLast_tears_each_files_last_write_independently_and_an_extending_write_whole_sectors()
    {
        var s = new SimStorage();
        using var a = s.Open("a", StorageOpenMode.CreateNew);
        using var b = s.Open("b", StorageOpenMode.CreateNew);
        a.Write(0, Fill(1024, 1));                 // unsynced only write of a, extends from 0: sectors 0, 1
        b.Write(0, Fill(512, 2));
        b.Flush();
        b.Write(512, Fill(512, 3));                // extends b by exactly one sector

        var lengthsA = new HashSet<int>();
        var lengthsB = new HashSet<int>();
        for (int seed = 0; seed < 40; seed++)
        {
            var img = s.CrashImage(s.OpCount, CrashVariant.TornLast, seed);
            var ia = img.ReadAll("a");
            lengthsA.Add(ia.Length);
            // Possible: nothing, sector 0 only, sector 1 only (sector 0 a zero gap), both.
            if (ia.Length == 512) Assert.Equal(Fill(512, 1), ia);
            else if (ia.Length == 1024)
                Assert.True(ia.AsSpan().SequenceEqual(Fill(1024, 1)) || ia.AsSpan().SequenceEqual(Concat(Fill(512, 0), Fill(512, 1))));
            else Assert.Empty(ia);
            var ib = img.ReadAll("b");
            lengthsB.Add(ib.Length);
            Assert.True(ib.AsSpan().SequenceEqual(Fill(512, 2)) || ib.AsSpan().SequenceEqual(Concat(Fill(512, 2), Fill(512, 3))));
        }
        Assert.Contains(0, lengthsA);
        Assert.Contains(1024, lengthsA);
        Assert.Equal(new HashSet<int> { 512, 1024 }, lengthsB);
    }

    [Fact]
    public void Random_is_deterministic_per_seed_and_each_sector_is_old_or_new()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, Fill(8192, 0x00));
        f.Flush();
        // Eight disjoint unsynced writes, each two sectors, with distinct bytes.
        for (int i = 0; i < 8; i++) f.Write(i * 1024, Fill(1024, (byte)(0x10 + i)));

        var distinct = new HashSet<string>();
        bool sawDropped = false, sawApplied = false, sawTorn = false;
        for (int seed = 0; seed < 30; seed++)
        {
            var img = s.CrashImage(s.OpCount, CrashVariant.Random, seed).ReadAll("f");
            Assert.Equal(img, s.CrashImage(s.OpCount, CrashVariant.Random, seed).ReadAll("f"));
            Assert.Equal(8192, img.Length);
            distinct.Add(Convert.ToHexString(img));
            for (int i = 0; i < 8; i++)
            {
                var states = new bool[2];
                for (int half = 0; half < 2; half++)
                {
                    int start = i * 1024 + half * 512;
                    byte first = img[start];
                    Assert.True(first == 0 || first == 0x10 + i, $"seed {seed}, write {i}: {first:X2}");
                    Assert.All(img[start..(start + 512)], b => Assert.Equal(first, b));
                    states[half] = first != 0;
                }
                if (!states[0] && !states[1]) sawDropped = true;
                else if (states[0] && states[1]) sawApplied = true;
                else sawTorn = true;
            }
        }
        Assert.True(distinct.Count > 20, $"only {distinct.Count} distinct images");
        Assert.True(sawDropped && sawApplied && sawTorn);
    }

    [Fact]
    public void Random_keeps_the_original_order_of_applied_overlapping_writes()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, Fill(512, 0));
        f.Flush();
        f.Write(0, Fill(512, 1));
        f.Write(0, Fill(512, 2));
        var seen = new HashSet<byte>();
        for (int seed = 0; seed < 60; seed++)
        {
            var img = s.CrashImage(s.OpCount, CrashVariant.Random, seed).ReadAll("f");
            Assert.All(img, b => Assert.Equal(img[0], b));
            seen.Add(img[0]);
        }
        // 0 (both dropped), 1 (only the first survived), 2 (the second survived, whatever the first did).
        Assert.Equal(new HashSet<byte> { 0, 1, 2 }, seen);
    }

    [Fact]
    public void SetLength_growth_and_shrink_are_durable_only_after_flush()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, Fill(1000, 7));
        f.Flush();
        f.SetLength(4000);
        Assert.Equal(Fill(1000, 7), s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).ReadAll("f"));
        Assert.Equal(Concat(Fill(1000, 7), Fill(3000, 0)), s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 0).ReadAll("f"));
        f.Flush();
        Assert.Equal(4000, s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).ReadAll("f").Length);

        f.SetLength(10);
        Assert.Equal(4000, s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).ReadAll("f").Length);
        Assert.Equal(Fill(10, 7), s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 0).ReadAll("f"));
        f.SetLength(100);                          // shrink then grow: the old bytes must not come back
        f.Flush();
        Assert.Equal(Concat(Fill(10, 7), Fill(90, 0)), s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).ReadAll("f"));
        Assert.Equal(Concat(Fill(10, 7), Fill(90, 0)), s.ReadAll("f"));
    }

    [Fact]
    public void Rename_and_delete_are_reflected_in_images_from_that_point_on()
    {
        var s = new SimStorage();
        WriteFile(s, "final", [1, 1], flush: true);
        WriteFile(s, "tmp", [2, 2, 2], flush: true);
        int beforeRename = s.OpCount;
        s.Rename("tmp", "final");
        int afterRename = s.OpCount;
        s.Delete("final");

        var before = s.CrashImage(beforeRename, CrashVariant.DropUnsynced, 0);
        Assert.Equal(new[] { "final", "tmp" }, before.List());
        Assert.Equal(new byte[] { 1, 1 }, before.ReadAll("final"));
        var after = s.CrashImage(afterRename, CrashVariant.DropUnsynced, 0);
        Assert.Equal(new[] { "final" }, after.List());
        Assert.Equal(new byte[] { 2, 2, 2 }, after.ReadAll("final"));
        Assert.Empty(s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 0).List());
    }

    [Fact]
    public void Unsynced_writes_move_with_a_renamed_file_and_an_open_handle_follows_it()
    {
        var s = new SimStorage();
        using var f = s.Open("tmp", StorageOpenMode.CreateNew);
        f.Write(0, [5, 5]);
        s.Rename("tmp", "final");
        f.Write(2, [6]);                           // through the handle opened as "tmp"
        Assert.Equal("final", s.GetOp(s.OpCount - 1).File);
        Assert.Equal(new byte[] { 5, 5, 6 }, s.ReadAll("final"));
        Assert.Empty(s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).ReadAll("final"));
        Assert.Equal(new byte[] { 5, 5, 6 }, s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 0).ReadAll("final"));
        f.Flush();
        Assert.Equal(new byte[] { 5, 5, 6 }, s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).ReadAll("final"));
        Assert.False(s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).Exists("tmp"));
    }

    [Fact]
    public void Writes_to_a_deleted_file_reach_no_image()
    {
        var s = new SimStorage();
        var f = s.Open("f", StorageOpenMode.CreateNew);
        s.Delete("f");
        f.Write(0, [1]);
        f.Flush();
        WriteFile(s, "f", [9], flush: true);       // a new file with the same name
        Assert.Equal(new byte[] { 9 }, s.CrashImage(s.OpCount, CrashVariant.KeepUnsynced, 0).ReadAll("f"));
    }

    [Fact]
    public void Unsynced_ops_of_deleted_or_replaced_files_are_not_pending()
    {
        var s = new SimStorage();
        var f = s.Open("f", StorageOpenMode.CreateNew);   // op 0
        f.Write(0, [1]);                                  // op 1: pending
        s.Delete("f");                                    // op 2: nothing pending any more
        f.Write(1, [2]);                                  // op 3: to an unlinked file
        var g = s.Open("g", StorageOpenMode.CreateNew);   // op 4
        g.Write(0, [3]);                                  // op 5: pending
        WriteFile(s, "h", [4], flush: true);              // ops 6, 7, 8: create, write, flush h
        s.Rename("h", "g");                               // op 9: g's pending write is gone with it
        var points = s.EnumerateCrashImages(AllVariants, seed: 0).ToList();
        // k = ops done. Pending (4 points) after 2 (f's write) and 6..9 (g's write); after the delete (3), the write
        // to the unlinked f (4) and the rename that replaces g (10) nothing is pending (1 point).
        Assert.Equal(new[] { 0, 1, 2, 2, 2, 2, 3, 4, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 9, 10 },
            points.Select(p => p.OpCount).ToArray());
        Assert.Equal(new byte[] { 4 }, points[^1].Image.ReadAll("g"));
        f.Dispose();
        g.Dispose();
    }

    [Fact]
    public void Writes_after_clone_or_image_do_not_leak_into_it()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, Fill(100_000, 1));
        f.Flush();
        var clone = s.Clone();
        var image = s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0);
        f.Write(10, [2]);
        f.Write(70_000, [3]);
        f.Flush();
        Assert.Equal(Fill(100_000, 1), clone.ReadAll("f"));
        Assert.Equal(Fill(100_000, 1), image.ReadAll("f"));
        Assert.Equal(Fill(100_000, 1), clone.CrashImage(0, CrashVariant.DropUnsynced, 0).ReadAll("f"));
        Assert.Equal(2, s.ReadAll("f")[10]);
    }

    [Fact]
    public void EnumerateCrashImages_yields_the_expected_points()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew); // op 0: create
        f.Write(0, Fill(600, 1));                  // op 1
        s.Mark("m1");                              // op 2
        f.Flush();                                 // op 3
        f.Write(0, Fill(600, 2));                  // op 4
        f.SetLength(700);                          // op 5
        s.Mark("m2");                              // op 6
        f.Flush();                                 // op 7
        f.Write(0, Fill(10, 3));                   // op 8
        f.Flush();                                 // op 9
        Assert.Equal(10, s.OpCount);

        var points = s.EnumerateCrashImages(AllVariants, seed: 3).ToList();
        // k=0: nothing pending -> 1; k=1 (after create) -> 1; k=2 (a write pending) -> 4; k=3 after a marker: skipped;
        // k=4 (after the flush) -> 1; k=5 -> 4; k=6 -> 4; k=7 after a marker: skipped; k=8 -> 1; k=9 -> 4; k=10 -> 1.
        Assert.Equal(21, points.Count);
        Assert.Equal(new[] { 0, 1, 2, 2, 2, 2, 4, 5, 5, 5, 5, 6, 6, 6, 6, 8, 9, 9, 9, 9, 10 }, points.Select(p => p.OpCount).ToArray());
        Assert.Equal(CrashVariant.DropUnsynced, points[0].Variant);
        Assert.Equal(AllVariants, points.Where(p => p.OpCount == 6).Select(p => p.Variant).ToArray());

        Assert.Empty(points[0].Image.List());
        Assert.Empty(points[1].Image.ReadAll("f"));
        Assert.Equal(Fill(600, 1), points[6].Image.ReadAll("f"));
        Assert.Equal(Concat(Fill(600, 2), Fill(100, 0)),
            points.Single(p => p.OpCount == 6 && p.Variant == CrashVariant.KeepUnsynced).Image.ReadAll("f"));
        Assert.Equal(Concat(Fill(10, 3), Fill(590, 2), Fill(100, 0)), points[^1].Image.ReadAll("f"));
        // Images yielded earlier are not changed by the later flushes (they share unchanged pages).
        Assert.Equal(Concat(Fill(600, 2), Fill(100, 0)), points[15].Image.ReadAll("f"));
        foreach (var p in points)
        {
            var expected = s.CrashImage(p.OpCount, p.Variant, seed: 3);
            Assert.Equal(expected.List(), p.Image.List());
            foreach (var name in expected.List()) Assert.Equal(expected.ReadAll(name), p.Image.ReadAll(name));
            Assert.Equal(0, p.Image.OpCount);
        }
    }

    [Fact]
    public void EnumerateCrashImages_over_a_long_log_of_megabyte_files()
    {
        const int mib = 1 << 20;
        var s = new SimStorage();
        var rng = new Random(11);
        using var a = s.Open("a", StorageOpenMode.CreateNew);
        using var b = s.Open("b", StorageOpenMode.CreateNew);
        a.SetLength(mib);
        b.SetLength(mib);
        var block = new byte[4096];
        while (s.OpCount < 1999)
        {
            var f = rng.Next(2) == 0 ? a : b;
            if (rng.Next(8) == 0) f.Flush();
            else
            {
                rng.NextBytes(block);
                f.Write(rng.Next(mib / 512 - 8) * 512, block);
            }
        }
        a.Flush();
        b.Flush();
        int count = 0;
        CrashPoint? last = null;
        foreach (var p in s.EnumerateCrashImages([CrashVariant.TornLast, CrashVariant.Random], seed: 1))
        {
            count++;
            last = p;
        }
        Assert.InRange(count, s.OpCount + 1, 2 * (s.OpCount + 1));
        Assert.Equal(s.OpCount, last!.OpCount);
        Assert.Equal(s.ReadAll("a"), last.Image.ReadAll("a"));
        Assert.Equal(s.ReadAll("b"), last.Image.ReadAll("b"));
    }

    [Fact]
    public void Random_ops_across_pages_match_a_plain_model_live_and_in_images()
    {
        // Writes cross 64 KiB page boundaries; lengths shrink and grow; images are taken in the middle.
        var rng = new Random(7);
        var s = new SimStorage();
        string[] names = ["a", "b"];
        var handles = new IStorageFile[2];
        var current = new List<byte>[2];
        var durable = new byte[2][];
        for (int i = 0; i < 2; i++)
        {
            handles[i] = s.Open(names[i], StorageOpenMode.CreateNew);
            current[i] = new List<byte>();
            durable[i] = [];
        }
        var checkpoints = new List<(int Ops, byte[][] Durable, byte[][] Current)>();
        for (int step = 0; step < 400; step++)
        {
            int i = rng.Next(2);
            int what = rng.Next(10);
            if (what < 6)
            {
                int offset = rng.Next(300_000), len = rng.Next(1, 140_000);
                var data = new byte[len];
                rng.NextBytes(data);
                handles[i].Write(offset, data);
                while (current[i].Count < offset + len) current[i].Add(0);
                for (int j = 0; j < len; j++) current[i][offset + j] = data[j];
            }
            else if (what < 8)
            {
                int length = rng.Next(400_000);
                handles[i].SetLength(length);
                if (length < current[i].Count) current[i].RemoveRange(length, current[i].Count - length);
                while (current[i].Count < length) current[i].Add(0);
            }
            else
            {
                handles[i].Flush();
                durable[i] = current[i].ToArray();
            }
            Assert.Equal(current[i].Count, handles[i].Length);
            if (step % 25 == 0)
            {
                Assert.Equal(current[i].ToArray(), s.ReadAll(names[i]));
                checkpoints.Add((s.OpCount, [durable[0], durable[1]], [current[0].ToArray(), current[1].ToArray()]));
            }
        }
        foreach (var (ops, dur, cur) in checkpoints)
        {
            var drop = s.CrashImage(ops, CrashVariant.DropUnsynced, 0);
            var keep = s.CrashImage(ops, CrashVariant.KeepUnsynced, 0);
            for (int i = 0; i < 2; i++)
            {
                Assert.Equal(dur[i], drop.ReadAll(names[i]));
                Assert.Equal(cur[i], keep.ReadAll(names[i]));
            }
        }
        int checkpoint = 0;
        foreach (var p in s.EnumerateCrashImages([CrashVariant.KeepUnsynced], seed: 0))
        {
            if (checkpoint == checkpoints.Count) break;
            if (p.OpCount != checkpoints[checkpoint].Ops) continue;
            for (int i = 0; i < 2; i++) Assert.Equal(checkpoints[checkpoint].Current[i], p.Image.ReadAll(names[i]));
            checkpoint++;
        }
        Assert.Equal(checkpoints.Count, checkpoint);
        foreach (var h in handles) h.Dispose();
    }

    // ---- helpers ----

    [Fact]
    public void Overwrite_clone_and_FromFiles()
    {
        var input = new Dictionary<string, byte[]> { ["x"] = [1, 2, 3], ["y"] = [4] };
        var s = SimStorage.FromFiles(input);
        input["x"][0] = 99;                        // copied
        Assert.Equal(new byte[] { 1, 2, 3 }, s.ReadAll("x"));
        Assert.Equal(0, s.OpCount);

        s.Overwrite("x", 1, [0xF0]);               // on a fresh storage: durable too
        Assert.Equal(new byte[] { 1, 0xF0, 3 }, s.ReadAll("x"));
        Assert.Equal(new byte[] { 1, 0xF0, 3 }, s.CrashImage(0, CrashVariant.DropUnsynced, 0).ReadAll("x"));
        Assert.Equal(0, s.OpCount);

        using (var f = s.Open("y", StorageOpenMode.OpenExisting)) f.Write(1, [5]);
        var clone = s.Clone();
        Assert.Equal(new byte[] { 4, 5 }, clone.CrashImage(0, CrashVariant.DropUnsynced, 0).ReadAll("y"));
        clone.Overwrite("y", 0, [6]);
        Assert.Equal(new byte[] { 4, 5 }, s.ReadAll("y"));
        Assert.Equal(new byte[] { 6, 5 }, clone.ReadAll("y"));
    }

    // ---- fault injection ----

    [Fact]
    public void FailAfter_fails_the_chosen_kind_after_n_ops()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        s.FailAfter(2, SimFault.Flush);
        f.Write(0, [1]);
        f.Flush();
        f.Write(1, [2]);                           // writes still work
        var ex = Assert.Throws<IOException>(() => f.Flush());
        Assert.StartsWith("sim: injected fault", ex.Message);
        int ops = s.OpCount;
        Assert.Throws<IOException>(() => f.Flush());
        Assert.Equal(ops, s.OpCount);              // failed ops are not logged

        s.FailAfter(0, SimFault.Write);            // replaces the flush fault
        f.Flush();
        Assert.Throws<IOException>(() => f.Write(0, [9]));
        Assert.Throws<IOException>(() => f.SetLength(0));
        Assert.Equal(new byte[] { 1, 2 }, s.ReadAll("f")); // a failed write changes nothing
        s.ClearFault();
        f.Write(0, [9]);
        Assert.Equal(new byte[] { 9, 2 }, s.ReadAll("f"));
    }

    [Fact]
    public void FailAfter_with_a_file_counts_and_fails_only_that_files_ops()
    {
        var s = new SimStorage();
        using var f = s.Open("f", StorageOpenMode.CreateNew);
        using var g = s.Open("g", StorageOpenMode.CreateNew);
        s.FailAfter(1, SimFault.WriteAndFlush, "g");
        f.Write(0, [1]);                           // not g's: neither counted nor failed
        f.Flush();
        g.Write(0, [2]);                           // g's first op: let through
        var ex = Assert.Throws<IOException>(() => g.Flush());
        Assert.Contains("flush g", ex.Message);
        Assert.Throws<IOException>(() => g.Write(1, [3]));
        f.Write(1, [4]);
        f.Flush();
        Assert.Equal(new byte[] { 1, 4 }, s.ReadAll("f"));
        Assert.Equal(new byte[] { 2 }, s.ReadAll("g"));
        s.ClearFault();
        g.Write(1, [3]);
        Assert.Equal(new byte[] { 2, 3 }, s.ReadAll("g"));
    }

    [Fact]
    public void PowerOff_fails_every_later_device_op_but_reads_work()
    {
        var s = new SimStorage();
        var f = s.Open("f", StorageOpenMode.CreateNew);
        f.Write(0, [1, 2]);
        f.Flush();
        f.Write(2, [3]);
        s.PowerOff();
        Assert.True(s.IsPoweredOff);
        Assert.Throws<IOException>(() => f.Write(0, [9]));
        Assert.Throws<IOException>(() => f.SetLength(0));
        Assert.Throws<IOException>(() => f.Flush());
        Assert.Throws<IOException>(() => s.Open("g", StorageOpenMode.CreateNew));
        Assert.Throws<IOException>(() => s.Rename("f", "g"));
        Assert.Throws<IOException>(() => s.Delete("f"));

        var buf = new byte[3];
        Assert.Equal(3, f.Read(0, buf));
        Assert.Equal(new byte[] { 1, 2, 3 }, buf);
        using var again = s.Open("f", StorageOpenMode.OpenExisting);
        Assert.Equal(3, again.Length);
        s.Mark("after power off");
        Assert.Equal(new byte[] { 1, 2 }, s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0).ReadAll("f"));
    }

    [Fact]
    public void Concurrent_writers_are_all_recorded()
    {
        var s = new SimStorage();
        var threads = new Thread[4];
        for (int t = 0; t < threads.Length; t++)
        {
            int id = t;
            threads[t] = new Thread(() =>
            {
                using var f = s.Open("f" + id, StorageOpenMode.CreateNew);
                for (int i = 0; i < 500; i++)
                {
                    f.Write(i * 4L, BitConverter.GetBytes(i * 10 + id));
                    if (i % 50 == 49) f.Flush();
                    s.Mark((id, i));
                }
            });
            threads[t].Start();
        }
        foreach (var t in threads) t.Join();
        Assert.Equal(4 * (1 + 500 + 10 + 500), s.OpCount);
        var img = s.CrashImage(s.OpCount, CrashVariant.DropUnsynced, 0);
        for (int t = 0; t < 4; t++)
        {
            var content = img.ReadAll("f" + t);
            Assert.Equal(2000, content.Length);
            for (int i = 0; i < 500; i++) Assert.Equal(i * 10 + t, BitConverter.ToInt32(content, i * 4));
        }
    }
}
