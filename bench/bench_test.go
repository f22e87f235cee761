package bench

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{3, 1, 2})
	if s != (Summary{N: 3, Median: 2, Min: 1, Max: 3}) {
		t.Errorf("odd: %+v", s)
	}
	s = Summarize([]float64{4, 1, math.NaN(), 2, 3})
	if s != (Summary{N: 4, Median: 2.5, Min: 1, Max: 4}) {
		t.Errorf("even with NaN: %+v", s)
	}
	s = Summarize(nil)
	if s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("empty: %+v", s)
	}
	if r := Ratio(Summary{N: 1, Median: 1}, Summary{N: 1, Median: 4}); r != 0.25 {
		t.Errorf("ratio %v", r)
	}
	if !math.IsNaN(Ratio(Summary{N: 1, Median: 1}, Summary{})) || !math.IsNaN(Ratio(Summary{N: 1, Median: 1}, Summary{N: 1})) {
		t.Error("ratio to nothing or zero should be NaN")
	}
	if v := CPUPerGB(1.5, 3e9); v != 0.5 {
		t.Errorf("CPUPerGB = %v", v)
	}
	if !math.IsNaN(CPUPerGB(1, 0)) || !math.IsNaN(CPUPerGB(math.NaN(), 1e9)) {
		t.Error("CPUPerGB without bytes or CPU should be NaN")
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{FormatSummary(Summary{N: 3, Median: 1.234, Min: 1.1, Max: 1.5}, 2), "1.23 [1.10–1.50]"},
		{FormatSummary(Summary{N: 1, Median: 1.234, Min: 1.234, Max: 1.234}, 2), "1.23"},
		{FormatSummary(Summary{}, 2), "—"},
		{FormatKilo(Summary{N: 2, Median: 85817, Min: 80100, Max: 91534}), "85.8 k [80.1–91.5]"},
		{FormatShare(0.0781), "7.8 %"},
		{FormatShare(0.5), "50 %"},
		{FormatShare(math.NaN()), "—"},
		{FormatTimes(1.049), "1.05×"},
		{FormatTimes(math.Inf(1)), "—"},
		{Configs[0].String(), "1 stream →"},
		{Configs[3].String(), "4 streams ←"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	tab := Table([]string{"a", "long header"}, [][]string{{"x→", "1"}, {"yyyy", "22"}})
	want := "| a    | long header |\n| ---- | ----------- |\n| x→   | 1           |\n| yyyy | 22          |\n"
	if tab != want {
		t.Errorf("table:\n%s\nwant:\n%s", tab, want)
	}
}
