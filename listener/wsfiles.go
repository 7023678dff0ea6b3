package listener

import (
	"io"

	"net/http"
	"os"
	"path"
	"strings"
)

// serveFile answers a plain HTTP request from dir (WSOptions.FileDir):
// GET and HEAD only; a path ending in / means its index.html; a missing
// file, a directory or a name that would leave dir is 404.
func serveFile(w http.ResponseWriter, r *http.Request, dir string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "roost: only GET and HEAD are served here", http.StatusMethodNotAllowed)
		return
	}
	name := path.Clean("/" + r.URL.Path)
	if strings.HasSuffix(r.URL.Path, "/") {
		name = path.Join(name, "index.html")
	}
	// os.DirFS refuses names with .. elements; Clean has removed them
	// anyway, from a rooted path.
	f, err := os.DirFS(dir).Open(strings.TrimPrefix(name, "/"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		http.NotFound(w, r)
		return
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, st.Name(), st.ModTime(), rs)
}
