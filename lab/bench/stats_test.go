package bench

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestQuantile(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0, 1}, {0.5, 5.5}, {0.9, 9.1}, {0.99, 9.91}, {1, 10}} {
		if got := Quantile(s, c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Quantile(1..10, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := Quantile([]float64{7}, 0.99); got != 7 {
		t.Errorf("Quantile([7], 0.99) = %v, want 7", got)
	}
	if got := Quantile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("Quantile(nil) = %v, want NaN", got)
	}
}

func TestSummarise(t *testing.T) {
	got := Summarise([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	want := Dist{N: 3, Min: 1, P50: 2, P90: 2.8, P99: 2.98, Max: 3, Mean: 2}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-9 })); diff != "" {
		t.Errorf("Summarise(3, 1, 2 ms) (-want +got):\n%s", diff)
	}
	if got := Summarise(nil); got != (Dist{}) {
		t.Errorf("Summarise(nil) = %+v, want the zero Dist", got)
	}
}

func TestRatioAndDuplicates(t *testing.T) {
	if got := Ratio(1, 4); got != 0.25 {
		t.Errorf("Ratio(1, 4) = %v, want 0.25", got)
	}
	for _, c := range [][2]float64{{1, 0}, {math.NaN(), 1}, {1, math.NaN()}} {
		if got := Ratio(c[0], c[1]); !math.IsNaN(got) {
			t.Errorf("Ratio(%v, %v) = %v, want NaN", c[0], c[1], got)
		}
	}
	if got := Duplicates([]string{"a", "b", "a", "a", "c"}); got != 2 {
		t.Errorf("Duplicates(a b a a c) = %d, want 2", got)
	}
}

func TestRotate(t *testing.T) {
	for i, want := range [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 1, 2}} {
		if got := rotate([]int{0, 1, 2}, i); !cmp.Equal(got, want) {
			t.Errorf("rotate(0 1 2, %d) = %v, want %v", i, got, want)
		}
	}
}
