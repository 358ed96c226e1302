using Motr.Be.List;
using Motr.Be.Segments;
using Motr.Runtime;

namespace Motr.Be.Tests.List;

/// <summary>A fresh domain folder under the temp directory, deleted on dispose; opens engines on it.</summary>
internal sealed class ListDomain : IDisposable
{
    public ListDomain(int segments = 1)
    {
        Segments = segments;
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "motr-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public int Segments { get; }

    public DomainOptions Options => new()
    {
        Path = Path,
        Segments = Segments,
        SegmentSize = 1 << 20,
        LogSize = 8 << 20,
    };

    public Task<Engine> OpenAsync() => Engine.OpenAsync(Options);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Fixed places in the data area [4096, Size) that the list tests use (no allocator).</summary>
internal static class ListLayout
{
    /// <summary>Heads of up to 32 lists, 64 bytes apart.</summary>
    public const long HeadsStart = 4096;
    public const long HeadStride = 64;

    /// <summary>Elements: 64-byte records, link embedded at +16 (so element offset != link offset).</summary>
    public const long ElemsStart = 8192;
    public const long ElemSize = 64;
    public const int LinkOffset = 16;

    public static long HeadAt(int i) => HeadsStart + i * HeadStride;

    public static long Elem(int i) => ElemsStart + i * ElemSize;
}

internal static class ListAssert
{
    public static List<long> Forward(PersistentList list)
    {
        var r = new List<long>();
        foreach (long e in list) r.Add(e);
        return r;
    }

    public static List<long> Backward(PersistentList list)
    {
        var r = new List<long>();
        foreach (long e in list.Backward) r.Add(e);
        return r;
    }

    /// <summary>Asserts the list holds exactly <paramref name="expected"/> in order, seen every way the API offers.</summary>
    public static void Same(PersistentList list, IReadOnlyList<long> expected, string? context = null)
    {
        string where = context is null ? "" : context + ": ";
        var problems = list.Check();
        if (problems.Count != 0) Assert.Fail(where + "Check() found: " + string.Join(" | ", problems));
        var fwd = Forward(list);
        if (!fwd.SequenceEqual(expected))
            Assert.Fail($"{where}forward walk [{Hex(fwd)}], expected [{Hex(expected)}]");
        var bwd = Backward(list);
        bwd.Reverse();
        if (!bwd.SequenceEqual(expected))
            Assert.Fail($"{where}backward walk (reversed) [{Hex(bwd)}], expected [{Hex(expected)}]");
        if (list.Count != expected.Count) Assert.Fail($"{where}count {list.Count}, expected {expected.Count}");
        if (list.IsEmpty != (expected.Count == 0)) Assert.Fail($"{where}IsEmpty is {list.IsEmpty} with {expected.Count} elements");
        long head = expected.Count == 0 ? 0 : expected[0];
        long tail = expected.Count == 0 ? 0 : expected[^1];
        if (list.Head != head || list.Tail != tail)
            Assert.Fail($"{where}head/tail 0x{list.Head:X}/0x{list.Tail:X}, expected 0x{head:X}/0x{tail:X}");
        for (int i = 0; i < expected.Count; i++)
        {
            long next = i + 1 < expected.Count ? expected[i + 1] : 0;
            long prev = i > 0 ? expected[i - 1] : 0;
            if (list.Next(expected[i]) != next || list.Prev(expected[i]) != prev)
                Assert.Fail($"{where}Next/Prev of #{i} 0x{expected[i]:X} are 0x{list.Next(expected[i]):X}/0x{list.Prev(expected[i]):X}, expected 0x{next:X}/0x{prev:X}");
            if (!list.Contains(expected[i])) Assert.Fail($"{where}Contains(0x{expected[i]:X}) is false");
        }
    }

    public static string Hex(IEnumerable<long> xs) => string.Join(", ", xs.Select(x => $"0x{x:X}"));

    /// <summary>The bytes of the part of the data area the list tests use.</summary>
    public static byte[] Snapshot(Segment seg) => seg.Bytes(ListLayout.HeadsStart, 64 << 10).ToArray();
}
