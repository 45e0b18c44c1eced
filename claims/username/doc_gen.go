package username

//go:generate go run gen_scripts.go -ucd /usr/share/unicode -o scripts_table.go

// scxRange is one line of ScriptExtensions.txt: the code points lo..hi
// and their Script_Extensions, as Go script names separated by spaces.
type scxRange struct {
	lo, hi  rune
	scripts string
}
