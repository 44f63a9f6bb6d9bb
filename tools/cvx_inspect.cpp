#include <iostream>
int main(int argc, char** argv) {
  std::cerr << "cvx_inspect: not yet implemented" << std::endl;
  return 2;
}
