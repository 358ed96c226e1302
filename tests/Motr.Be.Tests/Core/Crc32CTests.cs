using System.Numerics;

namespace Motr.Be.Tests.Core;

public class Crc32CTests
{
    private static uint Simple(ReadOnlySpan<byte> data)
    {
        uint c = ~0u;
        foreach (byte b in data) c = BitOperations.Crc32C(c, b);
        return ~c;
    }

    [Fact]
    public void Check_value_of_the_standard()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        Assert.Equal(0u, Crc32C.Compute(ReadOnlySpan<byte>.Empty));
    }

    [Fact]
    public void Interleaved_streams_equal_the_byte_at_a_time_definition_for_every_length_and_offset()
    {
        var rng = new Random(1);
        var buf = new byte[3 * 1024 * 3 + 777];
        rng.NextBytes(buf);
        for (int len = 0; len <= 3 * 1024 + 600; len += len < 900 ? 1 : 37)
        {
            int off = rng.Next(8);
            var s = buf.AsSpan(off, len);
            Assert.Equal(Simple(s), Crc32C.Compute(s));
        }
        Assert.Equal(Simple(buf), Crc32C.Compute(buf));
        // Split anywhere: appending pieces equals the whole.
        for (int cut = 0; cut < buf.Length; cut += 311)
            Assert.Equal(Simple(buf), Crc32C.Compute(buf.AsSpan(0, cut), buf.AsSpan(cut)));
    }
}
